"""Benchmarks: each prints its figures and the baseline it compares against."""
