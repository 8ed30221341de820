#!/usr/bin/env python
"""Markdown table of finished runs: method x dataset, mean ± std over seeds.

    python tools/summarize.py output/classification/* [--metric test_mean_class_acc] [--out table.md]
    python tools/summarize.py --table 3 [--root output/reproduce]   # a paper table, ours beside the paper's

Each argument is a run directory holding ``results.json`` or a folder searched for them.
With ``--table N`` (1-5, alpha) the runs are those of ``tools/reproduce.py --table N`` under
``--root``; each cell shows ours, the paper's published number and the difference; a cell
without finished runs shows "—".

Cells are percentages, ``mean ± std (n)``; std is the sample standard deviation (0 for n = 1).
"""
from adarand.classification.summary import main

if __name__ == "__main__":
    main(description=__doc__)
