"""A paper table filled from finished runs: ours (mean ± std over seeds) beside the published number.

Runs are read from ``ROOT/<cell id>/seed*/results.json`` (see ``grid`` and ``plan``); the published
numbers from ``paper_results.json`` next to this module, keyed by the tables' row and column
labels. ``std`` is the sample standard deviation over seeds (0 for one seed).
"""
import glob
import json
import os
import statistics
from dataclasses import dataclass

from adarand.classification.run_log import read_results, result_metric

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


def read_cell(root, cell):
    """[(path, results.json dict)] of every finished seed of ``cell`` under ``root``; a run whose recorded
    method is not the cell's (e.g. an override of it) is an error naming its results.json."""
    finished = []
    for path in sorted(glob.glob(os.path.join(root, cell.id, "seed*", "results.json"))):
        result = read_results(path)
        if result.get("method") != cell.method:
            raise ValueError(f"{path}: the run recorded method {result.get('method')!r}, but cell {cell.id} "
                             f"runs {cell.method!r} ({cell.config}); move the run out of {root}")
        finished.append((path, result))
    return finished


def read_cells(table, root):
    """{cell id: :func:`read_cell`} of every cell of ``table``, each results.json read once."""
    return {cell.id: read_cell(root, cell) for cell in {c.id: c for c in table.cells}.values()}


def metric_values(finished, metric):
    """``100 * results[metric]`` of each of ``finished`` (:func:`read_cell`)."""
    return [100.0 * result_metric(result, metric, path) for path, result in finished]


def position_result(table, row, col, root, metric="test_top1", finished=None):
    """The best (highest mean) of the position's cells that have finished runs; None when none has.
    ``finished``: the table's :func:`read_cells` when already read."""
    best = None
    for cell in table.cells_at(row, col):
        values = metric_values(finished[cell.id] if finished is not None else read_cell(root, cell),
                               table.metric_of(col, metric))
        if values:
            result = Result(*mean_std(values), len(values), cell.id)
            if best is None or result.mean > best.mean:
                best = result
    return best


def position_results(table, root, metric="test_top1", finished=None):
    """{(row, col): :func:`position_result`} of every position, each results.json read once."""
    finished = finished if finished is not None else read_cells(table, root)
    return {(row, col): position_result(table, row, col, root, metric, finished)
            for row in table.rows for col in table.cols}


def render(table, root, metric="test_top1", paper=None, results=None):
    """Markdown: the paper's rows and columns, each column as ours | paper | difference (ours - paper);
    a study of ours (``table.published`` false) shows our column alone. ``results``: the
    :func:`position_results` when already computed."""
    paper = paper if paper is not None else load_paper_results()
    results = results if results is not None else position_results(table, root, metric)
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
            ours, theirs = results[row, col], values.get(row, {}).get(col)
            at = table.cells_at(row, col)
            if not at:
                cells.append(table.empty_position)
            elif ours is None:
                cells.append(MISSING)
            else:
                several = len(at) > 1
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
