"""The step benchmarks: paired bootstrap intervals, round-robin order, and a --quick smoke run of each."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
from adarand_projects.bench.timing import describe, paired_ratio, round_robin  # noqa: E402


def test_paired_ratio_of_exact_ratios_has_a_point_interval():
    base = [1.0, 2.0, 4.0, 3.0]
    same = paired_ratio(base, list(base))
    assert (same["ratio"], same["ci_low"], same["ci_high"], same["within_noise"]) == (1.0, 1.0, 1.0, True)
    slower = paired_ratio(base, [1.1 * b for b in base])
    assert slower["ci_low"] == pytest.approx(1.1) and slower["ci_high"] == pytest.approx(1.1)
    assert not slower["within_noise"] and "slower" in describe(slower)


def test_paired_ratio_interval_holds_the_median_and_widens_with_noise():
    import random

    rng = random.Random(0)
    base = [1.0 + 0.5 * rng.random() for _ in range(40)]  # the machine drifts: pairing removes it
    quiet = paired_ratio(base, [b * (1.02 + 0.002 * rng.gauss(0, 1)) for b in base])
    noisy = paired_ratio(base, [b * (1.02 + 0.05 * rng.gauss(0, 1)) for b in base])
    for result in (quiet, noisy):
        assert result["ci_low"] <= result["ratio"] <= result["ci_high"]
    assert not quiet["within_noise"] and quiet["ci_low"] > 1.0
    assert noisy["ci_high"] - noisy["ci_low"] > 5 * (quiet["ci_high"] - quiet["ci_low"])
    with pytest.raises(ValueError, match="same positive number of rounds"):
        paired_ratio([1.0], [1.0, 2.0])


def test_round_robin_rotates_who_goes_first_and_drops_warmup():
    calls = []
    providers = {name: (lambda name=name: calls.append(name) or len(calls)) for name in "abc"}
    times = round_robin(providers, rounds=3, warmup=1)
    assert calls == list("abc" "bca" "cab" "abc")
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3, "c": 3}


@pytest.mark.parametrize("tool", ["bench_cls_step.py", "bench_det_step.py", "bench_seg_step.py"])
@pytest.mark.slow
def test_quick_mode_prints_ratio_and_interval(tool, tmp_path):
    if tool != "bench_cls_step.py":
        pytest.importorskip("detectron2")
    out = tmp_path / "report.md"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "bench", tool), "--quick", "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["ci_low"] <= summary["time_ratio"] <= summary["ci_high"]
    assert len(summary["load_before"]) == len(summary["load_after"]) == 3
    if tool == "bench_seg_step.py":  # AdaRand drew labelled pixels of a mostly-background batch with ignore pixels
        assert summary["regularized_pixels"] > 0 and summary["ignore_share"] > 0
        assert summary["background_share"] > 0.5
    text = out.read_text()
    assert "95 %" in text and "load average" in text.lower()
    assert ("within noise" in text) == summary["within_noise"]
