"""Benchmark helpers: round-robin timing and paired bootstrap intervals, kernel launch counts."""
