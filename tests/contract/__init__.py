"""Behaviour tests written against contract Protocols, run against every implementation."""
