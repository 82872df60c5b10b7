"""Benchmarks: each runs as ``python -m bench.<name>`` and writes its results to ``bench/results``.

Nothing here is collected by pytest (``testpaths = ["tests"]``); tests never assert timings.
"""
