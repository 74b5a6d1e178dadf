"""Benchmarks behind `dynamics bench`: each prints a table and compares ratios within one run."""
