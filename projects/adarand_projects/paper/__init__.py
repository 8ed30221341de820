"""Reproducing the paper's classification tables: the run grid, tables beside the published numbers, plots."""
