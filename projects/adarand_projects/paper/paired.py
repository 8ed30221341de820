"""Paired comparisons of finished runs against a baseline method (``tools/summarize.py --paired``).

A run of method m is paired with the baseline's run of the same *setting* (:data:`SETTING_KEYS`
of ``results.json``: data set, training fraction, backbone and epochs, i.e. everything that
defines the experiment but the method and the seed) and the same ``SEED``. For the n pairs,
with ``m_i`` and ``b_i`` the metric in % of the method's and the baseline's run of seed i,
``d_i = m_i - b_i`` (percentage points):

- mean paired difference ``d̄ = (1/n) sum_i d_i``;
- its 95 % interval: Student t, ``d̄ ± t_{0.975, n-1} s_d / sqrt(n)`` (``scipy.stats.ttest_rel``,
  the default), or a BCa bootstrap over the pairs (``scipy.stats.bootstrap(paired=True)``,
  9,999 resamples, seed 0); undefined for n = 1;
- wins: ``#{i : d_i > 0}`` (strictly better; a tie is no win);
- p: two-sided sign-flip permutation test of ``d̄`` (the two runs of each pair swapped or not), the
  share of sign patterns ``s`` with ``|sum_i s_i d_i| >= |sum_i d_i|``: exact over all ``2^n``
  patterns for n <= :data:`EXACT_MAX_PAIRS` (:func:`sign_flip_p`), else ``resamples`` random
  patterns drawn with seed 0 (``scipy.stats.permutation_test`` with ``permutation_type="samples"``,
  Monte Carlo, ``p = (k + 1) / (resamples + 1)``, marked MC). scipy enumerates exact patterns one
  by one (6 s for 20 pairs on a CPU core); :func:`sign_flip_p` counts them in milliseconds.

Runs without a partner are left out and counted; the baseline is never compared with itself.
"""
import json
import math
from collections import Counter
from dataclasses import dataclass

import numpy as np
from scipy import stats

from adarand.classification.run_log import read_results, result_metric

SETTING_KEYS = ("dataset", "fraction", "backbone", "epochs")
CI_METHODS = ("t", "bootstrap")
EXACT_MAX_PAIRS = 30  # the sign-flip test is exact up to this many pairs (2 x 2^15 half sums)
DEFAULT_RESAMPLES = 2 ** 16  # random sign patterns above EXACT_MAX_PAIRS
BOOTSTRAP_RESAMPLES = 9999
RANDOM_SEED = 0
MISSING = "—"
SMALL_N = 6  # up to this many pairs, the text says how small p can get


@dataclass(frozen=True)
class PairedRun:
    """One finished run: ``group`` is what is compared (the method, or a paper table's cell id)."""

    group: str
    method: str
    setting: tuple  # ((key, value), ...) in SETTING_KEYS order, plus any extra keys
    seed: int
    value: float  # 100 * metric
    source: str  # the results.json it comes from (for errors)


@dataclass(frozen=True)
class Comparison:
    """The pairs of one group and setting with the baseline, and their statistics (in points)."""

    group: str
    method: str
    baseline: str
    setting: tuple
    seeds: tuple
    diffs: tuple
    mean_diff: float
    ci_low: float
    ci_high: float
    wins: int
    p_value: float
    p_exact: bool
    ci: str  # "t" or "bootstrap"

    @property
    def n(self):
        return len(self.diffs)

    def to_json(self, metric):
        def number(x):
            return None if math.isnan(x) else float(x)

        return {"method": self.method, "group": self.group, "baseline": self.baseline, **dict(self.setting),
                "metric": metric, "n": self.n, "mean_diff": number(self.mean_diff), "ci_low": number(self.ci_low),
                "ci_high": number(self.ci_high), "ci": self.ci, "wins": self.wins, "p_value": float(self.p_value),
                "p_exact": self.p_exact, "seeds": list(self.seeds), "diffs": [float(d) for d in self.diffs]}


def from_result(result, source, metric="test_top1", group=None, extra=()):
    """A :class:`PairedRun` from a results.json dict; a missing key is an error naming ``source``."""
    for key in ("method", "seed", *SETTING_KEYS):
        if result.get(key) is None:
            raise KeyError(f"{source} has no value for {key!r} (pairing needs method, seed, "
                           f"{', '.join(SETTING_KEYS)} and the metric)")
    setting = tuple((k, result[k]) for k in SETTING_KEYS) + tuple(extra)
    return PairedRun(group or result["method"], result["method"], setting, int(result["seed"]),
                     100.0 * result_metric(result, metric, source), str(source))


def load_runs(files, metric="test_top1"):
    return [from_result(read_results(f), f, metric) for f in files]


def _signed_sums(d):
    """The ``2^len(d)`` sums ``sum_i s_i d_i`` over the sign patterns ``s`` in ``{-1, 1}^len(d)``."""
    sums = np.zeros(1)
    for value in d:
        sums = np.concatenate((sums + value, sums - value))
    return sums


def sign_flip_p(d):
    """Exact two-sided sign-flip p of the mean of ``d``: the share of the ``2^n`` sign patterns whose
    ``|sum_i s_i d_i|`` reaches ``|sum_i d_i|`` (within ``1e-9 sum_i |d_i|``, so that equal sums reached
    in another order tie), counted by meeting in the middle: the signed sums of one half sorted,
    those of the other half searched in them."""
    d = np.asarray(d, dtype=np.float64)
    threshold = abs(d.sum()) - 1e-9 * np.abs(d).sum()
    if threshold <= 0:  # a zero mean difference: every pattern is as extreme
        return 1.0
    first, second = _signed_sums(d[:len(d) // 2]), np.sort(_signed_sums(d[len(d) // 2:]))
    above = len(second) - np.searchsorted(second, threshold - first, side="left")
    below = np.searchsorted(second, -threshold - first, side="right")
    return float((above.sum() + below.sum()) / 2 ** len(d))


def paired_stats(x, y, ci="t", resamples=DEFAULT_RESAMPLES):
    """Statistics of ``x - y`` over pairs: (mean, ci_low, ci_high, wins, p, exact); see the module doc."""
    if ci not in CI_METHODS:
        raise ValueError(f"ci {ci!r}; expected one of {CI_METHODS}")
    if resamples < 2:
        raise ValueError(f"resamples {resamples}: the sign-flip test needs at least 2")
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    d = x - y
    n = len(d)

    def mean_diff(a, b, axis=-1):
        return np.mean(a - b, axis=axis)

    if n < 2:
        low = high = math.nan
    elif np.ptp(d) == 0:  # every pair differs by the same amount: a zero-width interval (BCa is undefined)
        low = high = float(d[0])
    elif ci == "t":
        interval = stats.ttest_rel(x, y).confidence_interval(0.95)
        low, high = float(interval.low), float(interval.high)
    else:
        interval = stats.bootstrap((x, y), mean_diff, paired=True, vectorized=True, confidence_level=0.95,
                                   n_resamples=BOOTSTRAP_RESAMPLES, random_state=RANDOM_SEED).confidence_interval
        low, high = float(interval.low), float(interval.high)
    exact = n <= EXACT_MAX_PAIRS
    if exact:
        p = sign_flip_p(d)
    else:
        p = stats.permutation_test((x, y), mean_diff, permutation_type="samples", vectorized=True,
                                   n_resamples=resamples, alternative="two-sided", batch=2 ** 14,
                                   random_state=RANDOM_SEED).pvalue
    return float(d.mean()), low, high, int((d > 0).sum()), float(p), exact


def _index(runs):
    """{(setting, seed): run}; two runs of one group at the same setting and seed are an error."""
    index = {}
    for run in runs:
        key = (run.setting, run.seed)
        if key in index:
            raise ValueError(f"{index[key].source} and {run.source}: two runs of {run.group} with the same setting "
                             f"{dict(run.setting)} and seed {run.seed}; pass the runs of one experiment at a time")
        index[key] = run
    return index


def compare(runs, baseline, ci="t", resamples=DEFAULT_RESAMPLES):
    """Each group's runs against ``baseline``'s: (comparisons, the runs left out without a partner)."""
    base = _index([r for r in runs if r.method == baseline])
    if not base:
        raise ValueError(f"no runs of the baseline {baseline!r}; methods found: {sorted({r.method for r in runs})}")
    groups = {}
    for run in runs:
        if run.method != baseline:
            groups.setdefault(run.group, []).append(run)
    comparisons, left_out, used = [], [], set()
    for group, members in sorted(groups.items()):
        by_setting = {}
        for key, run in _index(members).items():
            if key in base:
                by_setting.setdefault(run.setting, []).append((run, base[key]))
                used.add(key)
            else:
                left_out.append(run)
        for setting, pairs in by_setting.items():
            pairs.sort(key=lambda p: p[0].seed)
            x, y = [p[0].value for p in pairs], [p[1].value for p in pairs]
            comparisons.append(Comparison(group, pairs[0][0].method, baseline, setting,
                                          tuple(p[0].seed for p in pairs), tuple(np.subtract(x, y).tolist()),
                                          *paired_stats(x, y, ci, resamples), ci))
    left_out += [run for key, run in base.items() if key not in used]
    return comparisons, left_out


# ---- text ----------------------------------------------------------------------------------------------------------

def describe(baseline, metric, ci, resamples, setting_keys=SETTING_KEYS):
    """The sentences that say how the pairs and statistics were made."""
    interval = ("Student t over the pairs (scipy.stats.ttest_rel)" if ci == "t" else
                f"BCa bootstrap over the pairs (scipy.stats.bootstrap, paired, {BOOTSTRAP_RESAMPLES} resamples, "
                f"seed {RANDOM_SEED})")
    return (f"Paired differences, method − {baseline} ({metric}, percentage points): each run is paired with the "
            f"{baseline} run of the same {', '.join(setting_keys)} and SEED. 95 % interval: {interval}. "
            f"wins: pairs where the method is strictly better. p: two-sided sign-flip permutation test of the mean "
            f"difference, exact over all 2^n sign patterns for n ≤ {EXACT_MAX_PAIRS} pairs, else {resamples} "
            f"random patterns drawn with seed {RANDOM_SEED} (scipy.stats.permutation_test, marked MC).")


def left_out_note(left_out):
    """The note on the runs ``left_out``, counted per method."""
    counts = Counter(run.method for run in left_out)
    if not counts:
        return "All runs paired."
    parts = ", ".join(f"{method} {count}" for method, count in sorted(counts.items()))
    return f"Left out, without a partner of the same setting and seed: {sum(counts.values())} runs ({parts})."


def format_p(comparison):
    return f"{comparison.p_value:.4g}" + ("" if comparison.p_exact else " (MC)")


def format_interval(comparison):
    if math.isnan(comparison.ci_low):
        return MISSING
    return f"[{comparison.ci_low:+.2f}, {comparison.ci_high:+.2f}]"


def format_cell(comparison):
    """One table cell: ``+1.23 [+0.45, +2.01] 8/10 p 0.012``."""
    return (f"{comparison.mean_diff:+.2f} {format_interval(comparison)} {comparison.wins}/{comparison.n} "
            f"p {format_p(comparison)}")


def varying_keys(comparisons):
    """The setting keys that take more than one value over ``comparisons``."""
    keys = [k for k, _ in comparisons[0].setting] if comparisons else []
    return [k for k in keys if len({dict(c.setting)[k] for c in comparisons}) > 1]


def _setting_value(value):
    return f"{value:g}" if isinstance(value, float) else str(value)


def markdown(comparisons, left_out, baseline, metric="test_top1", ci="t", resamples=DEFAULT_RESAMPLES, labels=None):
    """One row per method and setting; setting keys with one value over all rows go to the heading.

    ``labels``: {method: label}; its order is the rows' order (others follow, alphabetically)."""
    labels = labels or {}
    order = {m: i for i, m in enumerate(labels)}
    rows = sorted(comparisons, key=lambda c: (c.setting, order.get(c.method, len(order)), c.group))
    keys = [k for k, _ in rows[0].setting] if rows else []
    varying = varying_keys(rows)
    fixed = ", ".join(f"{k} {_setting_value(v)}" for k, v in (rows[0].setting if rows else ()) if k not in varying)
    header = ["method", *varying, "n", "mean diff (pp)", "95 % interval", "wins", "p (sign-flip)"]
    lines = [describe(baseline, metric, ci, resamples, keys or SETTING_KEYS), ""]
    if fixed:
        lines += [f"Setting: {fixed}.", ""]
    lines += ["| " + " | ".join(header) + " |", "|---" * len(varying + ["method"]) + "|---:" * 5 + "|"]
    for c in rows:
        setting = dict(c.setting)
        cells = [labels.get(c.method, c.group), *(_setting_value(setting[k]) for k in varying), str(c.n),
                 f"{c.mean_diff:+.2f}", format_interval(c), f"{c.wins}/{c.n}", format_p(c)]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", left_out_note(left_out)]
    fewest = min((c.n for c in rows), default=0)
    if 0 < fewest <= SMALL_N:
        lines.append(f"With {fewest} pairs the smallest possible two-sided p is 2/2^{fewest} = {2 / 2 ** fewest:.3g}.")
    return "\n".join(lines) + "\n"


def results_markdown(results, baseline, metric="test_top1", labels=None, ci="t", resamples=DEFAULT_RESAMPLES):
    """:func:`markdown` of results.json dicts already read (``make demo``'s runs) paired with ``baseline``."""
    runs = [from_result(r, f"results of {r.get('method')} seed {r.get('seed')}", metric) for r in results]
    return markdown(*compare(runs, baseline, ci, resamples), baseline, metric, ci, resamples, labels)


# ---- a paper table (tools/reproduce.py) ----------------------------------------------------------------------------

def table_runs(table, finished, metric="test_top1"):
    """{results key: runs}: the finished runs of a table's cells (``finished``: ``paper_table.read_cells``) read
    through the key of each cell's column (``table.metric_of``: the clip-imagenet columns are test sets of one
    run), grouped by cell id; the cell's pre-training joins the setting."""
    runs, read = {}, set()
    for cell in table.cells:
        key = table.metric_of(cell.col, metric)
        runs.setdefault(key, [])
        if (cell.id, key) not in read:  # a cell at several columns of one key is read once
            read.add((cell.id, key))
            runs[key] += [from_result(result, path, key, group=cell.id, extra=(("pretraining", cell.pretraining),))
                          for path, result in finished[cell.id]]
    return runs


def table_comparisons(table, finished, baseline, metric="test_top1", ci="t", resamples=DEFAULT_RESAMPLES):
    """({(cell id, results key): its Comparison, or "baseline" for the baseline's cells}, the runs left out,
    each once): each key's runs paired apart."""
    shown, left_out = {}, {}
    for key, runs in table_runs(table, finished, metric).items():
        comparisons, missing = compare(runs, baseline, ci, resamples)
        shown.update({(run.group, key): "baseline" for run in runs if run.method == baseline})
        shown.update({(c.group, key): c for c in comparisons})
        left_out.update((run.source, run) for run in missing)
    return shown, list(left_out.values())


def table_positions(table, results, cells, baseline, metric="test_top1"):
    """{(row, col): Comparison, or a word}: the comparison of the cell the paper table shows at the position
    (``results``: ``paper_table.position_results``), in the column's results key."""
    positions = {}
    for row in table.rows:
        for col in table.cols:
            shown = results[row, col]
            if not table.cells_at(row, col):
                positions[row, col] = table.empty_position
            elif shown is None:
                positions[row, col] = MISSING
            else:
                positions[row, col] = cells.get((shown.cell_id, table.metric_of(col, metric)),
                                                f"no {baseline} partner")
    return positions


def table_markdown(table, positions, left_out, baseline, metric="test_top1", ci="t", resamples=DEFAULT_RESAMPLES):
    """The paper table's rows and columns, each cell: mean difference [interval] wins/n p."""
    lines = [f"{table.title}: paired with {baseline}", "",
             describe(baseline, metric, ci, resamples, ("pre-training", *SETTING_KEYS)), "",
             "| | " + " | ".join(table.cols) + " |", "|---" + "|---:" * len(table.cols) + "|"]
    for row in table.rows:
        cells = [p if isinstance(p, str) else format_cell(p) for p in (positions[row, col] for col in table.cols)]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    lines += ["", left_out_note(left_out)]
    return "\n".join(lines) + "\n"


# ---- figure --------------------------------------------------------------------------------------------------------

def plot(entries, path, baseline, metric="test_top1", ci="t"):
    """One panel per setting, one point (mean difference) with its 95 % interval per method.

    ``entries``: [(panel title, point label, Comparison)], panels and points in the given order."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from adarand.files import save_figure

    panels, colors = {}, {}
    for title, label, comparison in entries:
        panels.setdefault(title, []).append((label, comparison))
        colors.setdefault(label, f"C{len(colors) % 10}")  # one colour per method over all panels
    if not panels:
        raise ValueError(f"nothing to plot: no run is paired with {baseline}")
    width = max(3.0, 0.8 * max(map(len, panels.values())) + 1.4)
    fig, axes = plt.subplots(1, len(panels), figsize=(width * len(panels), 3.8), sharey=True, squeeze=False)
    for ax, (title, points) in zip(axes[0], panels.items()):
        for i, (label, c) in enumerate(points):
            low, high = (c.mean_diff, c.mean_diff) if math.isnan(c.ci_low) else (c.ci_low, c.ci_high)
            ax.errorbar([i], [c.mean_diff], yerr=[[c.mean_diff - low], [high - c.mean_diff]], fmt="o", capsize=4,
                        color=colors[label])
            ax.annotate(f"{c.wins}/{c.n}", (i, high), textcoords="offset points", xytext=(0, 4), ha="center",
                        fontsize=7)
        ax.axhline(0.0, color="grey", linewidth=0.8, linestyle="--")
        ax.set_xticks(range(len(points)), [p[0] for p in points], rotation=30, ha="right")
        ax.set_xlim(-0.6, len(points) - 0.4)
        ax.margins(y=0.12)
        ax.set_title(title, fontsize=9)
    axes[0][0].set_ylabel(f"method − {baseline}, {metric} (pp)")
    interval = "Student t" if ci == "t" else "bootstrap"
    fig.suptitle(f"Paired differences with {baseline} (same seed), 95 % {interval} intervals; wins/n above",
                 fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
    plt.close(fig)


def setting_title(setting, keys=()):
    """``fraction 0.1, epochs 30``: the setting's ``keys`` (all of them when none are given)."""
    return ", ".join(f"{k} {_setting_value(v)}" for k, v in setting if not keys or k in keys)


# ---- tools/summarize.py --------------------------------------------------------------------------------------------

def add_arguments(parser):
    parser.add_argument("--paired", default="", metavar="BASELINE",
                        help="pair each method's runs with BASELINE's (e.g. ft) of the same setting and SEED")
    parser.add_argument("--ci", default="t", choices=CI_METHODS,
                        help="with --paired: the 95 %% interval, Student t (default) or BCa bootstrap over pairs")
    parser.add_argument("--resamples", type=int, default=DEFAULT_RESAMPLES,
                        help=f"with --paired: the sign-flip test is exact up to {EXACT_MAX_PAIRS} pairs, above "
                             f"that RESAMPLES random sign patterns (default {DEFAULT_RESAMPLES})")
    parser.add_argument("--json", action="store_true", help="with --paired: print a JSON list instead of Markdown")
    parser.add_argument("--plot", default="", metavar="FILE.png",
                        help="with --paired: draw the paired differences with their intervals")


def report(args, files=None):
    """``summarize.py --paired``: Markdown (or JSON) of the runs in ``files``, or of ``args.table``."""
    if args.table:
        from . import grid, paper_table

        table = grid.get_table(args.table)
        finished = paper_table.read_cells(table, args.root)
        results = paper_table.position_results(table, args.root, args.metric, finished)
        cells, left_out = table_comparisons(table, finished, args.paired, args.metric, args.ci, args.resamples)
        positions = table_positions(table, results, cells, args.paired, args.metric)
        text = (paper_table.render(table, args.root, args.metric, results=results) + "\n"
                + table_markdown(table, positions, left_out, args.paired, args.metric, args.ci, args.resamples))
        entries = [(col, row, positions[row, col]) for col in table.cols for row in table.rows
                   if isinstance(positions[row, col], Comparison)]  # panel = column, point = row
        records = [{**c.to_json(table.metric_of(col, args.metric)), "row": row, "col": col} for col, row, c in entries]
    else:
        comparisons, left_out = compare(load_runs(files, args.metric), args.paired, args.ci, args.resamples)
        text = markdown(comparisons, left_out, args.paired, args.metric, args.ci, args.resamples)
        records = [c.to_json(args.metric) for c in comparisons]
        keys = varying_keys(comparisons)
        entries = [(setting_title(c.setting, keys), c.group, c) for c in sorted(comparisons, key=lambda c: c.setting)]
    if args.plot:
        plot(entries, args.plot, args.paired, args.metric, args.ci)
    if args.json:
        return json.dumps(records, indent=2, allow_nan=False) + "\n", left_out_note(left_out)
    return text, ""
