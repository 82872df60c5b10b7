"""Quarry's typed contracts: the only language modules speak to each other.

Each ``contracts.<module>`` holds that module's request/answer Structs, its events and one
``<Module>Service`` Protocol; :mod:`contracts.common` holds shared value types and errors.
Contracts import only the standard library, msgspec and numpy.
"""
