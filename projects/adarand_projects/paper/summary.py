"""Markdown table of finished runs: method x dataset, ``mean ± std (n)`` over seeds, in %
(``tools/summarize.py``); with ``--table N`` a paper table, ours beside the published numbers
(:mod:`adarand_projects.paper.paper_table`). ``std`` is the sample standard deviation (0 for one run).
With ``--paired BASELINE``, runs paired with the baseline's by setting and seed
(:mod:`adarand_projects.paper.paired`).
"""
import argparse
import os
import sys

from adarand.classification.run_log import find_results, read_results, result_metric
from adarand.files import write_text
from adarand.runs.resume import read_recorded_config

from . import grid, paired, paper_table
from .paper_table import mean_std


def column(result):
    """A run's column: its dataset, ``dataset@fraction`` for a subset."""
    return result["dataset"] + (f"@{result['fraction']:g}" if result.get("fraction", 1.0) < 1.0 else "")


def collect(files, metric):
    """``{(method, dataset): [100 * metric]}`` from results.json files (dataset@fraction for subsets)."""
    table = {}
    for path in files:
        result = read_results(path)
        value = result_metric(result, metric, path)
        table.setdefault((result["method"], column(result)), []).append(100.0 * value)
    return table


def budget(path):
    """What a run's training cost: ``{"epochs", "fraction", "batch size"}`` from its results.json and (the
    batch size) the config.yaml beside it; a value not recorded is left out."""
    result, run_dir = read_results(path), os.path.dirname(path)
    config = read_recorded_config(run_dir) or {}
    found = {"epochs": result.get("epochs"), "fraction": result.get("fraction"),
             "batch size": config.get("SOLVER.BATCH_SIZE")}
    return {key: value for key, value in found.items() if value is not None}


def budget_warning(files, shown=3):
    """One line naming the budgets (epochs, fraction, batch size) that differ between runs of one column of
    the table, with their values and runs (at most ``shown`` named a value); ``None`` when none differs."""
    columns = {}
    for path in files:
        columns.setdefault(column(read_results(path)), []).append((os.path.dirname(path), budget(path)))
    parts = []
    for name, runs in sorted(columns.items()):
        for key in ("epochs", "fraction", "batch size"):
            values = {}
            for run_dir, cost in runs:
                if key in cost:
                    values.setdefault(cost[key], []).append(run_dir)
            if len(values) > 1:
                named = [f"{value:g} ({', '.join(dirs[:shown])}{f' +{len(dirs) - shown} more' * (len(dirs) > shown)})"
                         for value, dirs in sorted(values.items())]
                parts.append(f"{name}: {key} " + " vs ".join(named))
    if not parts:
        return None
    return "warning: the table mixes runs of different budgets, " + "; ".join(parts)


def markdown(table, metric):
    """One row per method (``ft`` first), one column per dataset; "–" where no run finished."""
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
            mean, std = mean_std(values)
            cells.append(f"{mean:.2f} ± {std:.2f} ({len(values)})")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None, description=__doc__):
    """``tools/summarize.py``: print (and with --out write) the table; returns its text."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="*", help="run directories, or folders holding them")
    parser.add_argument("--table", default="",
                        help="a table of tools/reproduce.py --table (1-5, alpha, lambda, clip-imagenet, digits); "
                             "our reconstructed rows and cells are listed under it")
    parser.add_argument("--root", default="output/reproduce", help="with --table: the runs' root (reproduce.py --root)")
    parser.add_argument("--metric", default="test_top1", help="results.json key (test_top1, test_mean_class_acc, ...)")
    parser.add_argument("--out", default="", help="also write the table to this file")
    paired.add_arguments(parser)
    args = parser.parse_args(argv)
    if (args.json or args.plot) and not args.paired:
        parser.error("--json and --plot go with --paired BASELINE")
    if args.paired and (args.table or args.runs):
        text, note = paired.report(args, None if args.table else find_results(args.runs))
        if note:
            print(note, file=sys.stderr)
    elif args.table:
        text = paper_table.render(grid.get_table(args.table), args.root, args.metric)
    elif args.runs:
        files = find_results(args.runs)
        warning = budget_warning(files)
        if warning:
            print(warning, file=sys.stderr)
        text = markdown(collect(files, args.metric), args.metric)
    else:
        parser.error("give run directories, or --table N")
    sys.stdout.write(text)
    if args.out:
        write_text(args.out, text)
    return text

