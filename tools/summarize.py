#!/usr/bin/env python
"""Markdown table of finished runs: method x dataset, mean ± std over seeds.

    python tools/summarize.py output/classification/* [--metric test_mean_class_acc] [--out table.md]
    python tools/summarize.py --table 3 [--root output/reproduce]   # a paper table, ours beside the paper's

Each argument is a run directory holding ``results.json`` or a folder searched for them.
Runs of one column that differ in epochs, fraction or batch size get one warning line on stderr.
With ``--table N`` (1-5, alpha) the runs are those of ``tools/reproduce.py --table N`` under
``--root``; each cell shows ours, the paper's published number and the difference; a cell
without finished runs shows "—".

Cells are percentages, ``mean ± std (n)``; std is the sample standard deviation (0 for n = 1).
A metric that is missing, not finite or outside [0, 1] is an error naming its results.json; with
``--table``, so is a run whose recorded method is not its cell's.

Paired comparisons with a baseline method (adarand_projects.paper.paired):

    python tools/summarize.py RUNS --paired ft [--ci bootstrap] [--json] [--plot paired.png]
    python tools/summarize.py --table digits --root /work/study/digits --paired ft [--plot ...]

``--paired BASELINE`` pairs each run with BASELINE's run of the same setting (dataset, fraction,
backbone, epochs; with --table also the cell's pre-training) and the same SEED, and prints per
method and setting: n pairs, the mean paired difference in percentage points, its 95 % interval
(Student t by default, ``--ci bootstrap`` for a BCa bootstrap over pairs), wins (pairs where
the method is strictly better) out of n, and a two-sided sign-flip permutation p-value (exact
over all 2^n sign patterns up to n = 30; above, --resamples random sign patterns, default 65536,
seed 0, marked MC). Runs without a partner are left out and counted in a note; the baseline is not
compared with itself. ``--json`` prints a JSON list (method, dataset, fraction, backbone, epochs,
n, mean_diff, ci_low, ci_high, wins, p_value, p_exact, seeds, diffs, ...; the note goes to stderr);
with ``--table`` a second table in the paper table's layout follows the plain one, each cell
``mean diff [interval] wins/n p``. ``--plot FILE.png`` draws the differences with their intervals,
one panel per setting (per column with --table), one point per method.
"""
from adarand_projects.paper.summary import main

if __name__ == "__main__":
    main(description=__doc__)
