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
import argparse
import glob
import json
import os
import statistics
import sys

from adarand.classification import paper_table, reproduce


def find_results(paths):
    files = []
    for path in paths:
        direct = os.path.join(path, "results.json")
        if os.path.isfile(direct):
            files.append(direct)
        else:
            files += sorted(glob.glob(os.path.join(path, "**", "results.json"), recursive=True))
    if not files:
        raise FileNotFoundError(f"no results.json under {paths}")
    return files


def collect(files, metric):
    """{(method, dataset): [values]} from results.json files."""
    table = {}
    for path in files:
        with open(path) as f:
            result = json.load(f)
        if result.get(metric) is None:
            raise KeyError(f"{path} has no value for {metric!r}")
        dataset = result["dataset"] + (f"@{result['fraction']:g}" if result.get("fraction", 1.0) < 1.0 else "")
        table.setdefault((result["method"], dataset), []).append(100.0 * result[metric])
    return table


def markdown(table, metric):
    methods = sorted({m for m, _ in table}, key=lambda m: (m != "ft", m))
    datasets = sorted({d for _, d in table})
    lines = [f"| method ({metric}, %) | " + " | ".join(datasets) + " |", "|---" * (len(datasets) + 1) + "|"]
    for method in methods:
        cells = []
        for dataset in datasets:
            values = table.get((method, dataset))
            if not values:
                cells.append("–")
                continue
            std = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.mean(values):.2f} ± {std:.2f} ({len(values)})")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="*", help="run directories, or folders holding them")
    parser.add_argument("--table", default="", help=f"a paper table: one of {list(reproduce.TABLES)}")
    parser.add_argument("--root", default="output/reproduce", help="with --table: the runs' root (reproduce.py --root)")
    parser.add_argument("--metric", default="test_top1", help="results.json key (test_top1, test_mean_class_acc, ...)")
    parser.add_argument("--out", default="", help="also write the table to this file")
    args = parser.parse_args(argv)
    if args.table:
        text = paper_table.render(reproduce.get_table(args.table), args.root, args.metric)
    elif args.runs:
        text = markdown(collect(find_results(args.runs), args.metric), args.metric)
    else:
        parser.error("give run directories, or --table N")
    sys.stdout.write(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    return text


if __name__ == "__main__":
    main()
