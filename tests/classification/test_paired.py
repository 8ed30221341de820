"""summarize.py --paired (adarand_projects.paper.paired): runs paired with a baseline by setting and
SEED, on generated results.json files; the statistics against float64 references written here."""
import contextlib
import io
import itertools
import json
import math
import os
import statistics
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from scipy import stats

from adarand_projects.paper import paired, summary

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.join(REPO, "plugin"), os.path.join(REPO, "projects")])}
SEEDS = range(10)
# a large seed-to-seed spread shared by both methods of a seed, and a near-constant gain of 2 points
SPREAD = [-20.0, 14.0, -7.0, 25.0, 3.0, -16.0, 9.0, -2.0, 18.0, -11.0]
GAIN = [2.0 + 0.3 * (-1) ** i for i in SEEDS]
SETTING = {"dataset": "digits", "fraction": 0.1, "backbone": "mobilenet_v2", "epochs": 8}


def result(method, seed, top1, **setting):
    return {"method": method, "seed": seed, **{**SETTING, **setting}, "test_top1": top1 / 100,
            "test_mean_class_acc": top1 / 100}


def write_run(directory, **fields):
    directory.mkdir(parents=True)
    (directory / "results.json").write_text(json.dumps(result(**fields)))


def summarize(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        summary.main([str(a) for a in argv])
    return out.getvalue(), err.getvalue()


def _sign_flip_p(diffs):
    """Two-sided exact sign-flip p by enumeration: share of the 2^n sign patterns whose |mean| >= the observed."""
    observed = abs(math.fsum(diffs))
    hits = sum(abs(math.fsum(s * d for s, d in zip(signs, diffs))) >= observed - 1e-9
               for signs in itertools.product((1, -1), repeat=len(diffs)))
    return hits / 2 ** len(diffs)


def _t_interval(diffs):
    n = len(diffs)
    half = stats.t.ppf(0.975, n - 1) * statistics.stdev(diffs) / math.sqrt(n)
    return statistics.mean(diffs) - half, statistics.mean(diffs) + half


@pytest.fixture
def spread_runs(tmp_path):
    """ft and adarand on 10 seeds with a large shared spread; adarand = ft + GAIN."""
    for seed in SEEDS:
        base = 60.0 + SPREAD[seed]
        write_run(tmp_path / "runs" / f"ft_seed{seed}", method="ft", seed=seed, top1=base)
        write_run(tmp_path / "runs" / f"adarand_seed{seed}", method="adarand", seed=seed, top1=base + GAIN[seed])
    return tmp_path / "runs"


def test_paired_interval_excludes_zero_where_the_unpaired_one_does_not(spread_runs):
    out, err = summarize([spread_runs, "--paired", "ft", "--json"])
    record, = json.loads(out)
    diffs = [GAIN[s] for s in SEEDS]
    assert (record["method"], record["baseline"], record["n"], record["wins"]) == ("adarand", "ft", 10, 10)
    assert record["mean_diff"] == pytest.approx(statistics.mean(diffs))
    assert (record["ci_low"], record["ci_high"]) == pytest.approx(_t_interval(diffs))
    assert record["ci_low"] > 0
    ft = [60.0 + SPREAD[s] for s in SEEDS]
    welch = stats.ttest_ind([f + g for f, g in zip(ft, diffs)], ft, equal_var=False).confidence_interval()
    assert welch.low < 0 < welch.high  # unpaired, the same runs show nothing
    assert record["p_value"] == pytest.approx(2 / 2 ** 10) and record["p_exact"]  # all 10 positive
    assert err.strip() == "All runs paired."


def test_json_fields_and_the_baseline_is_not_compared_with_itself(spread_runs):
    records = json.loads(summarize([spread_runs, "--paired", "ft", "--json"])[0])
    assert [r["method"] for r in records] == ["adarand"]
    fields = {"method", "dataset", "fraction", "n", "mean_diff", "ci_low", "ci_high", "wins", "p_value"}
    assert fields <= set(records[0])
    assert (records[0]["dataset"], records[0]["fraction"], records[0]["epochs"]) == ("digits", 0.1, 8)
    text, _ = summarize([spread_runs, "--paired", "ft"])
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    assert [r.split(" | ")[0] for r in rows[1:]] == ["| adarand"]
    assert "Student t" in text and "same dataset, fraction, backbone, epochs and SEED" in text


@pytest.mark.parametrize("diffs, wins, p", [
    ([1.0, 2.0, 3.0, 4.0, 5.0], 5, 2 / 32),  # all positive: only the observed pattern and its mirror
    ([1.0, 2.0, 3.0, 4.0, -0.5], 4, 4 / 32),  # |sum| >= 9.5: the observed, the all-positive, and their mirrors
    ([1.0, 0.0, -2.0, 3.0], 2, None),  # a tie is no win
])
def test_wins_n_and_p_checked_by_hand(diffs, wins, p):
    base = [70.0 + 10 * s for s in SPREAD[:len(diffs)]]
    mean, low, high, won, p_value, exact = paired.paired_stats(np.add(base, diffs), base)
    assert (won, exact) == (wins, True)
    assert mean == pytest.approx(statistics.mean(diffs))
    assert (low, high) == pytest.approx(_t_interval(diffs))
    assert p_value == pytest.approx(_sign_flip_p(diffs))
    if p is not None:
        assert p_value == pytest.approx(p)


def _sign_flip_p_of_counts(counts):
    """The exact sign-flip p of differences ``counts * q`` in integer arithmetic (no rounding, so ties are
    exact): every one of the 2^n sign patterns, numpy-vectorized in blocks."""
    counts = np.asarray(counts, dtype=np.int64)
    n, observed, hits = len(counts), abs(int(counts.sum())), 0
    for start in range(0, 2 ** n, 2 ** 16):
        patterns = np.arange(start, min(start + 2 ** 16, 2 ** n))[:, None] >> np.arange(n) & 1
        hits += int((np.abs((1 - 2 * patterns) @ counts) >= observed).sum())
    return hits / 2 ** n


@pytest.mark.parametrize("n", [12, 20, 21, 30])
def test_the_sign_flip_test_is_exact_up_to_30_pairs(n):
    """Differences are whole test images (multiples of 100/797 points, many ties), checked against every sign
    pattern counted in integers (n <= 20) and, for small n, against scipy's exact enumeration."""
    rng = np.random.default_rng(n)
    counts = rng.integers(-4, 9, n)
    base = rng.normal(80.0, 5.0, n)
    p, exact = paired.paired_stats(base + counts * 100 / 797, base)[4:]
    assert exact
    if n <= 20:
        assert p == _sign_flip_p_of_counts(counts)
    if n <= 12:
        x, y = base + counts * 100 / 797, base
        scipy_p = stats.permutation_test((x, y), lambda a, b, axis=-1: np.mean(a - b, axis=axis), vectorized=True,
                                         permutation_type="samples", n_resamples=2 ** n).pvalue
        assert p == pytest.approx(scipy_p)
    # the exact p of the same pairs and the Monte Carlo p of scipy (forced with 2^n > resamples) agree
    mc = stats.permutation_test((base + counts * 100 / 797, base), lambda a, b, axis=-1: np.mean(a - b, axis=axis),
                                vectorized=True, permutation_type="samples", n_resamples=20000, random_state=0).pvalue
    assert p == pytest.approx(mc, abs=0.02)


def test_more_than_30_pairs_use_a_seeded_monte_carlo_test_close_to_the_exact_one():
    rng = np.random.default_rng(3)
    base, diffs = rng.normal(70, 10, 31), rng.normal(0.4, 2.0, 31)
    sampled = paired.paired_stats(base + diffs, base, resamples=4096)
    assert not sampled[5]
    assert sampled[4] == pytest.approx(paired.sign_flip_p(diffs), abs=0.03)
    assert paired.paired_stats(base + diffs, base, resamples=4096)[4] == sampled[4]  # fixed seed


def test_twenty_seeds_are_labelled_exact(tmp_path):
    """The digits study's 20 paired seeds: an exact p, no "(MC)", and the text says up to 30 pairs."""
    rng = np.random.default_rng(0)
    for seed in range(20):
        base = 60.0 + rng.normal(0, 10)
        write_run(tmp_path / f"ft_seed{seed}", method="ft", seed=seed, top1=base)
        write_run(tmp_path / f"adarand_seed{seed}", method="adarand", seed=seed, top1=base + rng.normal(0.5, 1.0))
    text, _ = summarize([tmp_path, "--paired", "ft"])
    row, = [line for line in text.splitlines() if line.startswith("| adarand")]
    assert "(MC)" not in row and "exact over all 2^n sign patterns for n ≤ 30 pairs" in text
    record, = json.loads(summarize([tmp_path, "--paired", "ft", "--json"])[0])
    assert record["n"] == 20 and record["p_exact"]


@pytest.mark.parametrize("top1", ["NaN", "Infinity", "85.2", "-0.01", '"0.9"'])
@pytest.mark.parametrize("options", [[], ["--paired", "ft"], ["--paired", "ft", "--json"]])
def test_a_metric_that_is_not_an_accuracy_is_an_error_naming_the_results_file(spread_runs, top1, options):
    path = spread_runs / "adarand_seed4" / "results.json"
    path.write_text(json.dumps({**result("adarand", 4, 50.0), "test_top1": "X"}).replace('"X"', top1))
    with pytest.raises(ValueError, match=f"{path}: test_top1 is .*, not an accuracy in \\[0, 1\\]"):
        summarize([spread_runs, *options])


def test_summarize_exits_non_zero_on_a_nan_accuracy(spread_runs):
    path = spread_runs / "adarand_seed4" / "results.json"
    path.write_text(json.dumps({**result("adarand", 4, 50.0), "test_top1": math.nan}))
    done = subprocess.run([sys.executable, os.path.join(REPO, "tools", "summarize.py"), str(spread_runs),
                           "--paired", "ft", "--json"], capture_output=True, text=True, env=ENV)
    assert done.returncode != 0 and f"{path}: test_top1 is nan" in done.stderr and done.stdout == ""


def test_bootstrap_interval_on_request(spread_runs):
    text, _ = summarize([spread_runs, "--paired", "ft", "--ci", "bootstrap"])
    assert "BCa bootstrap over the pairs" in text and "Student t" not in text
    record, = json.loads(summarize([spread_runs, "--paired", "ft", "--json", "--ci", "bootstrap"])[0])
    assert record["ci"] == "bootstrap"
    assert 0 < record["ci_low"] < record["mean_diff"] < record["ci_high"]
    assert (record["ci_low"], record["ci_high"]) != pytest.approx(_t_interval(GAIN))


def test_degenerate_pairs_constant_gain_and_a_single_pair():
    assert paired.paired_stats([80.0, 60.0, 70.0], [79.0, 59.0, 69.0], ci="bootstrap")[1:3] == pytest.approx((1, 1))
    single = paired.paired_stats([80.0], [79.0])
    assert math.isnan(single[1]) and single[4] == 1.0


def test_unpaired_runs_are_left_out_and_counted(spread_runs):
    write_run(spread_runs / "adarand_seed10", method="adarand", seed=10, top1=70.0)  # no ft of seed 10
    write_run(spread_runs / "ft_seed11", method="ft", seed=11, top1=70.0)  # nobody else ran seed 11
    for seed in range(3):  # a 30-epoch arm must not pair with the 8-epoch ft runs
        write_run(spread_runs / f"adarand30_seed{seed}", method="adarand", seed=seed, top1=90.0, epochs=30)
    out, err = summarize([spread_runs, "--paired", "ft", "--json"])
    record, = json.loads(out)
    assert (record["epochs"], record["n"], record["mean_diff"]) == (8, 10, pytest.approx(statistics.mean(GAIN)))
    assert err.strip() == "Left out, without a partner of the same setting and seed: 5 runs (adarand 4, ft 1)."


def test_settings_are_compared_apart_and_the_varying_keys_are_columns(tmp_path):
    for fraction, gain in ((0.1, 1.0), (0.5, -1.0)):
        for seed in range(4):
            for method, value in (("ft", 60.0 + SPREAD[seed]), ("fnp", 60.0 + SPREAD[seed] + gain + 0.1 * seed)):
                write_run(tmp_path / f"{method}{fraction}_seed{seed}", method=method, seed=seed, top1=value,
                          fraction=fraction)
    text, _ = summarize([tmp_path, "--paired", "ft"])
    rows = {line.split(" | ")[1]: line for line in text.splitlines() if line.startswith("| fnp")}
    assert set(rows) == {"0.1", "0.5"}
    assert " +1.15 " in rows["0.1"] and "4/4" in rows["0.1"] and " -0.85 " in rows["0.5"] and "0/4" in rows["0.5"]
    assert "Setting: dataset digits, backbone mobilenet_v2, epochs 8." in text
    assert "smallest possible two-sided p is 2/2^4 = 0.125" in text


def test_two_runs_of_one_setting_and_seed_are_an_error_naming_both(spread_runs):
    write_run(spread_runs / "again", method="adarand", seed=3, top1=50.0)
    with pytest.raises(ValueError, match=r"adarand_seed3/results.json and .*again/results.json"):
        summarize([spread_runs, "--paired", "ft"])


def test_a_results_file_without_a_setting_key_is_an_error_naming_it(spread_runs):
    path = spread_runs / "ft_seed0" / "results.json"
    path.write_text(json.dumps({k: v for k, v in result("ft", 0, 50.0).items() if k != "epochs"}))
    with pytest.raises(KeyError, match=r"ft_seed0/results.json has no value for 'epochs'"):
        summarize([spread_runs, "--paired", "ft"])
    with pytest.raises(ValueError, match="no runs of the baseline 'l2sp'; methods found: \\['adarand', 'ft'\\]"):
        summarize([spread_runs / "adarand_seed1", spread_runs / "ft_seed1", "--paired", "l2sp"])


def test_plot_draws_one_panel_per_setting(spread_runs, tmp_path):
    for seed in range(3):
        write_run(spread_runs / f"adarand30_seed{seed}", method="adarand", seed=seed, top1=90.0, epochs=30)
        write_run(spread_runs / f"ft30_seed{seed}", method="ft", seed=seed, top1=88.0 + seed, epochs=30)
    png = tmp_path / "img" / "paired.png"
    summarize([spread_runs, "--paired", "ft", "--plot", png])
    with Image.open(png) as image:
        assert image.format == "PNG" and image.size[0] > image.size[1]  # two panels side by side


def _digits_study(root):
    """--table digits layout: ft and adarand at 10 % (5 seeds, adarand = ft + 2 + small noise), a
    30-epoch adarand arm without ft partners."""
    noise = [0.1, -0.1, 0.2, -0.2, 0.0]
    for seed in range(5):
        base = 70.0 + SPREAD[seed]
        write_run(root / "digits10_mobilenetv2_ft" / f"seed{seed}", method="ft", seed=seed, top1=base)
        write_run(root / "digits10_mobilenetv2_adarand" / f"seed{seed}", method="adarand", seed=seed,
                  top1=base + 2.0 + noise[seed])
    for seed in range(2):
        write_run(root / "digits20_mobilenetv2_adarand_30ep" / f"seed{seed}", method="adarand", seed=seed,
                  top1=80.0, fraction=0.2, epochs=30)
    return [2.0 + e for e in noise]


def test_table_with_paired_adds_the_paired_differences_in_the_tables_layout(tmp_path):
    diffs = _digits_study(tmp_path)
    text, err = summarize(["--table", "digits", "--root", tmp_path, "--paired", "ft"])
    plain, paired_part = text.split("paired with ft")
    assert "| AdaRand | " in plain and "(5)" in plain  # the plain table is kept
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ")[1:]
            for line in paired_part.splitlines() if line.startswith("| ")}
    low, high = _t_interval(diffs)
    assert rows["AdaRand"][0] == f"+2.00 [{low:+.2f}, {high:+.2f}] 5/5 p 0.0625"
    assert rows["Fine-tuning"][0] == "baseline"
    assert rows["AdaRand"][1] == paired.MISSING  # 20 %: no runs
    assert rows["AdaRand"][3].strip(" |") == "no ft partner"  # the 30-epoch arm
    assert "Left out, without a partner of the same setting and seed: 2 runs (adarand 2)." in paired_part
    assert "same pre-training, dataset, fraction, backbone, epochs and SEED" in paired_part

    records = json.loads(summarize(["--table", "digits", "--root", tmp_path, "--paired", "ft", "--json"])[0])
    assert [(r["row"], r["col"], r["group"], r["n"], r["wins"]) for r in records] == [
        ("AdaRand", "10%", "digits10_mobilenetv2_adarand", 5, 5)]
    png = tmp_path / "digits.png"
    summarize(["--table", "digits", "--root", tmp_path, "--paired", "ft", "--plot", png])
    with Image.open(png) as image:
        assert image.format == "PNG"


def test_table_with_paired_reads_each_columns_own_test_set(tmp_path):
    """clip-imagenet: one run a method, its ImageNet-A / -R columns read test_top1@imagenet-a / -r; the paired
    differences of each column are those of its own test set, and a run without partner is counted once."""
    gains = {"": [1.0, 1.2, 0.8], "@imagenet-a": [3.0, 3.5, 2.5], "@imagenet-r": [-2.0, -1.0, -3.0]}
    for seed in range(4):
        for method in ("ft", "adarand") if seed < 3 else ("adarand",):
            base = 70.0 + SPREAD[seed]
            metrics = {f"test_top1{key}": (base + (gain[seed] if method == "adarand" and seed < 3 else 0.0)) / 100
                       for key, gain in gains.items()}
            run = tmp_path / f"imagenet_vitb16clip_{method}" / f"seed{seed}"
            run.mkdir(parents=True)
            (run / "results.json").write_text(json.dumps(
                {**result(method, seed, base, dataset="imagenet", fraction=1.0, epochs=5), **metrics}))
    text, _ = summarize(["--table", "clip-imagenet", "--root", tmp_path, "--paired", "ft"])
    paired_part = text.split("paired with ft")[1]
    adarand, = [line.split(" | ")[1:] for line in paired_part.splitlines() if line.startswith("| AdaRand")]
    for cell, diffs in zip(adarand, gains.values()):
        assert cell.strip(" |").startswith(f"{statistics.mean(diffs):+.2f} ")
    assert "Left out, without a partner of the same setting and seed: 1 runs (adarand 1)." in paired_part
    records = json.loads(summarize(["--table", "clip-imagenet", "--root", tmp_path, "--paired", "ft", "--json"])[0])
    assert [(r["col"], r["metric"], r["n"]) for r in records] == [
        ("ImageNet", "test_top1", 3), ("ImageNet-A", "test_top1@imagenet-a", 3),
        ("ImageNet-R", "test_top1@imagenet-r", 3)]
    assert [r["mean_diff"] for r in records] == pytest.approx([statistics.mean(d) for d in gains.values()])


def test_json_and_plot_need_paired(spread_runs):
    with pytest.raises(SystemExit):
        summarize([spread_runs, "--json"])


def test_demo_paired_section_from_its_three_seeds():
    """make demo's paired text (tools/demo.py calls results_markdown with its runs' results)."""
    labels = {"ft": "FT", "fnp": "FNP", "adarand": "AdaRand"}
    gains = {"ft": [0, 0, 0], "fnp": [-1.0, 0.5, 2.0], "adarand": [3.0, 4.0, 5.0]}
    results = [result(m, seed, 80.0 + SPREAD[seed] + gains[m][seed], fraction=1.0)
               for m in labels for seed in range(3)]
    text = paired.results_markdown(results, "ft", labels=labels)
    rows = [line.split(" | ") for line in text.splitlines() if line.startswith("| ")][1:]
    low, high = _t_interval([3.0, 4.0, 5.0])
    assert [r[0] for r in rows] == ["| FNP", "| AdaRand"]
    assert rows[1][1:] == ["3", "+4.00", f"[{low:+.2f}, {high:+.2f}]", "3/3", "0.25 |"]
    assert rows[0][1:] == ["3", "+0.50", f"[{_t_interval(gains['fnp'])[0]:+.2f}, {_t_interval(gains['fnp'])[1]:+.2f}]",
                           "2/3", f"{_sign_flip_p(gains['fnp']):.4g} |"]
    assert "Setting: dataset digits, fraction 1, backbone mobilenet_v2, epochs 8." in text
    assert "smallest possible two-sided p is 2/2^3 = 0.25" in text
