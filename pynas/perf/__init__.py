"""Benchmark helpers: a device-aware timer, copy bandwidth, result records.

``python -m bench.ops`` (see :mod:`pynas.perf.ops`) times the fused ops
against their eager and compiled references.
"""
