"""Benchmark harness for the gateway; run it with ``python -m benchmarks.run`` (``make bench``)."""
