"""Benchmark suite: served throughput and latency against the in-process limit and the upstream
reference configuration (`python -m bench --help`)."""
