"""Markdown table of finished runs: method x dataset, ``mean ± std (n)`` over seeds, in %
(``tools/summarize.py``); with ``--table N`` a paper table, ours beside the published numbers
(:mod:`adarand_projects.paper.paper_table`). ``std`` is the sample standard deviation (0 for one run).
With ``--paired BASELINE``, runs paired with the baseline's by setting and seed
(:mod:`adarand_projects.paper.paired`).
"""
import argparse
import sys

from adarand.classification.run_log import find_results, read_results, result_metric
from adarand.files import write_text

from . import paired, paper_table, reproduce
from .paper_table import mean_std


def collect(files, metric):
    """``{(method, dataset): [100 * metric]}`` from results.json files (dataset@fraction for subsets)."""
    table = {}
    for path in files:
        result = read_results(path)
        value = result_metric(result, metric, path)
        dataset = result["dataset"] + (f"@{result['fraction']:g}" if result.get("fraction", 1.0) < 1.0 else "")
        table.setdefault((result["method"], dataset), []).append(100.0 * value)
    return table


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
        text = paper_table.render(reproduce.get_table(args.table), args.root, args.metric)
    elif args.runs:
        text = markdown(collect(find_results(args.runs), args.metric), args.metric)
    else:
        parser.error("give run directories, or --table N")
    sys.stdout.write(text)
    if args.out:
        write_text(args.out, text)
    return text

