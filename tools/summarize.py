#!/usr/bin/env python
"""Markdown table of finished runs: method x dataset, mean ± std over seeds.

    python tools/summarize.py output/classification/* [--metric test_mean_class_acc] [--out table.md]

Each argument is a run directory holding ``results.json`` or a folder searched for them.
Cells are percentages, ``mean ± std (n)``; std is the sample standard deviation (0 for n = 1).
"""
import argparse
import glob
import json
import os
import statistics
import sys


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
    parser.add_argument("runs", nargs="+", help="run directories, or folders holding them")
    parser.add_argument("--metric", default="test_top1", help="results.json key (test_top1, test_mean_class_acc, ...)")
    parser.add_argument("--out", default="", help="also write the table to this file")
    args = parser.parse_args(argv)
    text = markdown(collect(find_results(args.runs), args.metric), args.metric)
    sys.stdout.write(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    return text


if __name__ == "__main__":
    main()
