"""Benchmarks: each prints its figure as a ratio against raw DuckDB on the same data (median of runs)."""
