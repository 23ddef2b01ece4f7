"""Benchmarks (pytest-benchmark files) and the latency-table collector."""
