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
    _finished_seg_runs(out, demo, seeds=(0, 1))
    monkeypatch.setattr(demo, "draws_sem_seg", lambda: False)
    monkeypatch.setattr(sys, "argv", ["demo.py", "--out", str(out), "--seeds", "0", "1"])
    demo.main()
    report = (out / "demo_results.md").read_text()
    assert report in capsys.readouterr().out
    headers = [line for line in report.splitlines() if line.startswith("| method") and "time /" in line]
    assert [h.split(" | ")[-1] for h in headers] == ["time / epoch (s) |", "time / iter (s) |", "time / iter (s) |"]
    assert "÷" not in report and " 0.50 |" not in report  # FT ran first and slower: no ratio of such runs
    assert report.count(demo.TIMES_NOTE) == 3 and "docs/benchmarks.md" in demo.TIMES_NOTE
    ran = [os.path.basename(cmd[1]) for cmd in demo.commands]
    assert "train_cls.py" not in ran and "train_net.py" not in ran  # finished runs are kept


def _finished_seg_runs(out, demo, seeds):
    """The source run and each method's runs as the demo leaves them: AdaRand's mIoU 2 points above FT's, FT's
    steps twice as long."""
    (out / "segmentation" / "source").mkdir(parents=True)
    (out / "segmentation" / "source" / "model_final.pth").write_bytes(b"")
    for method, _ in demo.SEG_METHODS:
        for seed in seeds:
            run_dir = out / "segmentation" / f"{method}_seed{seed}"
            run_dir.mkdir(parents=True)
            (run_dir / "model_final.pth").write_bytes(b"")
            miou = 40.0 + seed + (2.0 if method == "adarand" else 0.0)
            records = [{"iteration": i, "time": 0.8 if method == "ft" else 0.4} for i in range(3)]
            records.append({"iteration": 3, "sem_seg/mIoU": miou, "sem_seg/fwIoU": 80.0, "sem_seg/mACC": 50.0,
                            "sem_seg/pACC": 90.0})
            (run_dir / "metrics.json").write_text("".join(json.dumps(r) + "\n" for r in records))


@pytest.mark.parametrize("draws", [True, False])
def test_the_segmentation_report_has_miou_the_paired_line_and_the_figure_or_a_note(demo, tmp_path, monkeypatch,
                                                                                    capsys, draws):
    out = tmp_path / "demo_output"
    _finished_seg_runs(out, demo, seeds=(0, 1))
    monkeypatch.setattr(demo, "draws_sem_seg", lambda: draws)
    monkeypatch.setattr(sys, "argv", ["demo.py", "--out", str(out), "--skip", "classification", "detection",
                                      "--seg-seeds", "0", "1"])
    demo.main()
    report = (out / "demo_results.md").read_text()
    assert "## Semantic segmentation" in report
    assert "| FT | 40.5 ± 0.7 | 80.0 ± 0.0 | 50.0 ± 0.0 | 90.0 ± 0.0 | 0.80 |" in report
    assert "| AdaRand | 42.5 ± 0.7 |" in report
    assert "(mIoU, percentage points)" in report
    paired = [line for line in report.splitlines() if line.startswith("| AdaRand | 2 |")]
    assert paired and paired[0].split(" | ")[2] == "+2.00"  # n 2, mean paired difference +2 points
    assert demo.SEG_HEAD_NOTE in report
    ran = [os.path.basename(cmd[1]) for cmd in demo.commands]
    assert "train_net.py" not in ran  # finished runs (and the source run) are kept
    drawing = [cmd for cmd in demo.commands if os.path.basename(cmd[1]) == "visualize.py"]
    if draws:
        assert len(drawing) == 1 and "voc_2012_sem_seg_val" in drawing[0]
        assert f"AdaRand={out / 'segmentation' / 'adarand_seed0' / 'inference' / 'sem_seg_predictions.json'}" \
            in drawing[0]
        assert "segmentation_comparison.png" in report
    else:
        assert not drawing and "No figure" in report and "figure is skipped" in capsys.readouterr().out
