"""tools/demo.py's report from finished runs (the training and drawing commands stubbed): no step-time
ratio of runs made one after another (issue 28, item 17)."""
import importlib.util
import json
import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def demo(monkeypatch):
    spec = importlib.util.spec_from_file_location("demo_tool", os.path.join(REPO, "tools", "demo.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    commands = []
    monkeypatch.setattr(module, "run", lambda cmd, env=None: commands.append(cmd))
    module.commands = commands
    return module


def _finished_runs(out, demo, seeds):
    """Classification and detection runs as the demo leaves them; FT's steps took twice as long (it ran
    first, on a busier machine)."""
    for method, _ in demo.CLS_METHODS:
        for seed in seeds:
            run_dir = out / "classification" / f"{method}_seed{seed}"
            run_dir.mkdir(parents=True)
            step = 0.2 if method == "ft" else 0.1
            (run_dir / "results.json").write_text(json.dumps({
                "method": method, "seed": seed, "dataset": "digits", "fraction": 0.2, "backbone": "mobilenet_v2",
                "epochs": 8, "test_top1": 0.8 + 0.01 * seed, "test_mean_class_acc": 0.8, "time_per_epoch_s": 10 * step,
                "step_time_s": step}))
    for method, _ in demo.DET_METHODS:
        run_dir = out / "detection" / method
        run_dir.mkdir(parents=True)
        (run_dir / "model_final.pth").write_bytes(b"")
        step = 2.0 if method == "ft" else 1.0
        records = [{"iteration": i, "time": step} for i in range(5)]
        records.append({"iteration": 5, "bbox/AP": 12.0, "bbox/AP50": 30.0, "segm/AP": 7.0, "segm/AP50": 20.0})
        (run_dir / "metrics.json").write_text("".join(json.dumps(r) + "\n" for r in records))


def test_the_report_has_no_step_time_ratio_and_points_to_the_paired_benchmarks(demo, tmp_path, monkeypatch, capsys):
    out = tmp_path / "demo_output"
    _finished_runs(out, demo, seeds=(0, 1))
    monkeypatch.setattr(sys, "argv", ["demo.py", "--out", str(out), "--seeds", "0", "1"])
    demo.main()
    report = (out / "demo_results.md").read_text()
    assert report in capsys.readouterr().out
    headers = [line for line in report.splitlines() if line.startswith("| method") and "time /" in line]
    assert [h.split(" | ")[-1] for h in headers] == ["time / epoch (s) |", "time / iter (s) |"]
    assert "÷" not in report and " 0.50 |" not in report  # FT ran first and slower: no ratio of such runs
    assert report.count(demo.TIMES_NOTE) == 2 and "docs/benchmarks.md" in demo.TIMES_NOTE
    ran = [os.path.basename(cmd[1]) for cmd in demo.commands]
    assert "train_cls.py" not in ran and "train_net.py" not in ran  # finished runs are kept
