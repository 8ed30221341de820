"""A paper table filled from finished runs: ours (mean ± std over seeds) beside the published number.

Runs are read from ``ROOT/<cell id>/seed*/results.json`` (see ``reproduce``); the published
numbers from ``paper_results.json`` next to this module, keyed by the tables' row and column
labels. ``std`` is the sample standard deviation over seeds (0 for one seed).
"""
import glob
import json
import os
import statistics
from dataclasses import dataclass

from adarand.classification.run_log import read_results

PAPER_RESULTS = os.path.join(os.path.dirname(__file__), "paper_results.json")
MISSING = "—"


def mean_std(values):
    """(mean, sample standard deviation; 0 for a single value)."""
    values = list(values)
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def load_paper_results(path=PAPER_RESULTS):
    with open(path) as f:
        return json.load(f)


@dataclass
class Result:
    """Our figure at one table position: mean/std in %, n finished seeds, the cell it comes from."""

    mean: float
    std: float
    n: int
    cell_id: str


def cell_values(root, cell_id, metric="test_top1"):
    """``100 * results[metric]`` of every finished seed of ``cell_id`` under ``root``."""
    values = []
    for path in sorted(glob.glob(os.path.join(root, cell_id, "seed*", "results.json"))):
        result = read_results(path)
        if result.get(metric) is None:
            raise KeyError(f"{path} has no value for {metric!r}")
        values.append(100.0 * result[metric])
    return values


def position_result(table, row, col, root, metric="test_top1"):
    """The best (highest mean) of the position's cells that have finished runs; None when none has."""
    best = None
    for cell in table.cells_at(row, col):
        values = cell_values(root, cell.id, table.metric_of(col, metric))
        if values:
            result = Result(*mean_std(values), len(values), cell.id)
            if best is None or result.mean > best.mean:
                best = result
    return best


def render(table, root, metric="test_top1", paper=None):
    """Markdown: the paper's rows and columns, each column as ours | paper | difference (ours - paper);
    a study of ours (``table.published`` false) shows our column alone."""
    paper = paper if paper is not None else load_paper_results()
    published = paper["tables"].get(table.name, {})
    values = published.get("values", {})
    extra = published.get("paper_columns", {})  # published columns that are not accuracies, shown as printed
    per_col = (lambda col: (f"{col} (ours)", "paper", "Δ")) if table.published else (lambda col: (col,))
    header = ["", *(h for col in table.cols for h in per_col(col)),
              *(f"{c} (paper)" for c in extra)]
    lines = [f"{table.title}; ours: {metric} over seeds under {root}", "",
             "| " + " | ".join(header) + " |", "|---" + "|---:" * (len(header) - 1) + "|"]
    for row in table.rows:
        cells = [row]
        for col in table.cols:
            ours = position_result(table, row, col, root, metric)
            theirs = values.get(row, {}).get(col)
            if not table.cells_at(row, col):
                cells.append(table.empty_position)
            elif ours is None:
                cells.append(MISSING)
            else:
                several = len(table.cells_at(row, col)) > 1
                cells.append(f"{ours.mean:.2f} ± {ours.std:.2f} ({ours.n})" + (f" {ours.cell_id}" if several else ""))
            if table.published:
                cells.append(MISSING if theirs is None else f"{theirs:.2f}")
                cells.append(f"{ours.mean - theirs:+.2f}" if ours is not None and theirs is not None else MISSING)
        cells += [str(column.get(row, MISSING)) for column in extra.values()]
        lines.append("| " + " | ".join(cells) + " |")
    notes = ([table.notes] if table.notes else []) + list(published.get("notes", []))
    if published.get("source"):
        notes.insert(0, f"Paper: {published['source']}.")
    lines += [""] + [f"- {note}" for note in notes] + reconstruction_lines(table)
    return "\n".join(lines) + "\n"


def reconstruction_lines(table):
    """Markdown lines naming the table's rows, columns and cells that are our reconstruction, not the
    paper's (``table.reconstructed``); none when every position is the paper's."""
    if not table.reconstructed:
        return []
    return ["", "Our reconstruction, not the paper's (docs/fidelity.md):",
            *(f"- {line}" for line in table.reconstructed)]
