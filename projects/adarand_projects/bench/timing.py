"""What the benchmarks (tools/bench/bench_*.py) share: one call timed, round-robin timing, medians, paired
bootstrap intervals of ratios, the machine's load, and the report (Markdown file, printed table, one JSON line last)."""
import json
import os
import random
import statistics
import time

import torch

from adarand.files import write_text


def write_report(path, report, table, summary):
    """Write ``report`` to ``path`` (skipped when empty), print ``table``, then ``summary`` as one JSON line (last)."""
    if path:
        write_text(path, report)
    print(table)
    if path:
        print(f"written to {path}")
    print(json.dumps(summary))


def load_average():
    """The 1-, 5- and 15-minute load averages (``os.getloadavg``), rounded."""
    return [round(x, 2) for x in os.getloadavg()]


def timed_call(fn, device=None):
    """(wall seconds, process CPU seconds) of one call of ``fn``; on a CUDA ``device``, synchronised before
    and after so that the wall time holds the call's kernels."""
    cuda = device is not None and torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
    start, cpu_start = time.perf_counter(), time.process_time()
    fn()
    if cuda:
        torch.cuda.synchronize(device)
    return time.perf_counter() - start, time.process_time() - cpu_start


def median_ms(seconds):
    """The median of ``seconds``, in milliseconds."""
    return 1e3 * statistics.median(seconds)


def round_robin(providers, rounds, warmup=0):
    """Time every provider once per round, rotating who goes first; {name: [seconds of each timed round]}.

    ``providers`` maps a name to a callable that runs one step and returns its seconds. A slow
    drift of a shared machine then hits every provider alike, and round r's times form a pair.
    """
    names = list(providers)
    times = {name: [] for name in names}
    for r in range(warmup + rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            seconds = providers[name]()
            if r >= warmup:
                times[name].append(seconds)
    return times


def paired_ratio(base, other, resamples=10000, confidence=0.95, seed=0):
    """Median over rounds of ``other[r] / base[r]`` and its bootstrap confidence interval.

    The rounds are resampled with replacement (pairs stay together), the median recomputed
    each time; the interval is the (1 - confidence) / 2 and (1 + confidence) / 2 quantiles.
    ``within_noise`` is True when the interval holds 1.0.
    """
    if len(base) != len(other) or not base:
        raise ValueError(f"need the same positive number of rounds; got {len(base)} and {len(other)}")
    ratios = [o / b for b, o in zip(base, other)]
    rng = random.Random(seed)
    medians = sorted(statistics.median(rng.choices(ratios, k=len(ratios))) for _ in range(resamples))
    tail = (1.0 - confidence) / 2
    low = medians[int(tail * (resamples - 1))]
    high = medians[int(round((1.0 - tail) * (resamples - 1)))]
    return {"ratio": statistics.median(ratios), "ci_low": low, "ci_high": high, "rounds": len(ratios),
            "within_noise": low <= 1.0 <= high}


def describe(result):
    """``1.004x [0.991, 1.017], within noise`` (or ``slower``/``faster``) for a :func:`paired_ratio` result."""
    verdict = "within noise" if result["within_noise"] else ("slower" if result["ratio"] > 1 else "faster")
    return f"{result['ratio']:.3f}x [{result['ci_low']:.3f}, {result['ci_high']:.3f}], {verdict}"
