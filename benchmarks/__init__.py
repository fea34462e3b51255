"""Benchmark scripts that print tables (never assert on time); `python -m benchmarks` runs benchmarks/run.py."""
