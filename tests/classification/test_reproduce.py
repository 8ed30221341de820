"""reproduce.main (tools/reproduce.py) and summary.main (tools/summarize.py) --table: every paper cell
as a loadable command, a tiny grid end to end."""
import contextlib
import io
import json
import os
import shlex
import sys
import types

import pytest
import torch
from torch import nn

from adarand.classification import backbones
from adarand_projects.paper import grid, launcher, paper_table, plan, reproduce, status, summary
from adarand.classification.build import build_model
from adarand.classification.config import load_cfg
from adarand.classification.results import method_name

import fake_trees  # noqa: E402  (tests/classification is on sys.path under pytest)

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))

# cells of each table, counted from the paper's layout (Table 4 and alpha: see grid.py)
EXPECTED_CELLS = {"1": 4 * 5, "2": 8 * 6, "3": 6 * 7, "4": 3 * 7, "5": 12, "alpha": 7, "clip-imagenet": 6, "lambda": 4 * 5}
BACKBONE_OF_TAG = {"r50": "resnet50", "r50simclr": "resnet50", "r50barlowtwins": "resnet50", "r50clip": "clip:RN50",
                   "vitb32": "vit_b_32", "vitb16": "vit_b_16", "vitb32clip": "clip:ViT-B-32",
                   "vitb16clip": "clip:ViT-B-16"}
FORMAT_OF_TAG = {"r50simclr": "simclr", "r50barlowtwins": "barlowtwins"}


def reproduce_main(argv):
    return reproduce.main(argv, repo_root=REPO)


def run_tool(main, argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def check_cell_config(cell, cfg, seed, out):
    """The loaded config is the cell's method, pre-training, dataset, subset, seed and output dir."""
    prefix, tag, method = os.path.basename(cell.config)[:-len(".yaml")].split("_")
    if method in ("l2sp", "delta", "bss"):
        assert (cfg.MODEL.ADARAND.METHOD, cfg.BASELINE.METHOD) == ("none", method)
    else:
        assert (cfg.MODEL.ADARAND.METHOD, cfg.BASELINE.METHOD) == ({"ft": "none"}.get(method, method), "")
    assert cfg.MODEL.BACKBONE == BACKBONE_OF_TAG[tag]
    assert cfg.MODEL.CHECKPOINT_FORMAT == FORMAT_OF_TAG.get(tag, "torchvision")
    assert cfg.DATASET.NAME == cell.dataset and cfg.DATASET.ROOT == f"datasets/{cell.dataset}"
    fraction = int(prefix[len("cars"):]) / 100 if prefix.startswith("cars") and prefix != "cars" else 1.0
    assert cfg.DATASET.FRACTION == pytest.approx(fraction)
    assert (cfg.SEED, cfg.OUTPUT_DIR) == (seed, out)
    # the official code: SGD for the ImageNet ResNet-50 only, AdamW for every other pre-training
    assert cfg.SOLVER.OPTIMIZER == ("sgd" if tag == "r50" else "adamw")
    assert method_name(cfg) == cell.method  # what results.json records, checked by summarize --table


@pytest.mark.parametrize("table", list(EXPECTED_CELLS))
def test_dry_run_lists_every_cell_and_seed_with_a_loadable_config(table, tmp_path):
    root = tmp_path / "runs"
    code, out, err = run_tool(reproduce_main, ["--table", table, "--dry-run", "--root", str(root)])
    lines = out.strip().splitlines()
    assert code == 0 and len(lines) == EXPECTED_CELLS[table] * 3
    assert f"{EXPECTED_CELLS[table]} cells x 3 seeds" in err
    cells = {c.id: c for c in grid.get_table(table).cells}
    outputs = set()
    for line in lines:
        argv = shlex.split(line)
        assert argv[:3] == ["python", "tools/train_cls.py", "--config-file"]
        config, opts = argv[3], argv[4:]
        assert os.path.isfile(os.path.join(REPO, config)), config
        cfg = load_cfg(os.path.join(REPO, config), opts)
        cell_id, seed_dir = os.path.relpath(cfg.OUTPUT_DIR, root).split(os.sep)
        seed = int(seed_dir[len("seed"):])
        check_cell_config(cells[cell_id], cfg, seed, str(root / cell_id / seed_dir))
        outputs.add(cfg.OUTPUT_DIR)
    assert len(outputs) == len(lines)
    if table == "alpha":
        alphas = {load_cfg(os.path.join(REPO, shlex.split(x)[3]), shlex.split(x)[4:]).MODEL.ADARAND.ALPHA for x in lines}
        assert alphas == set(grid.ALPHAS)
    if table == "lambda":
        lambdas = {load_cfg(os.path.join(REPO, shlex.split(x)[3]), shlex.split(x)[4:]).MODEL.ADARAND.LAMBDA for x in lines}
        assert lambdas == set(grid.LAMBDAS)
    if table == "clip-imagenet":  # App. B.1: 5 epochs on ImageNet
        assert {load_cfg(os.path.join(REPO, shlex.split(x)[3]), shlex.split(x)[4:]).SOLVER.EPOCHS for x in lines} == {5}


def test_paper_numbers_sit_at_positions_of_the_layout():
    paper = paper_table.load_paper_results()
    published = {name: table for name, table in grid.TABLES.items() if table.published}
    assert set(paper["tables"]) == set(published) and "digits" not in published
    for name, table in published.items():
        values = paper["tables"][name]["values"]
        for row, cols in values.items():
            assert row in table.rows, (name, row)
            assert set(cols) <= set(table.cols), (name, row, cols)
        for column in paper["tables"][name].get("paper_columns", {}).values():
            assert set(column) == set(table.rows), name
        if name in ("1", "2", "3", "5", "clip-imagenet"):  # every published position is there; every runnable one has a number
            assert set(values) == set(table.rows)
            assert all(values[c.row].get(c.col) is not None for c in table.cells)
    # Table 2's RandReg-Best for ResNet-50 is the row maximum of Table 1's three priors
    t1, t2 = paper["tables"]["1"]["values"], paper["tables"]["2"]["values"]
    randreg = [grid.METHODS[m] for m in grid.RANDREG]
    for pretraining, row in t1.items():
        assert t2[f"{pretraining} / RN-50"]["RandReg-Best"] == max(row[m] for m in randreg)


def test_dry_run_check_loads_every_config_and_names_every_missing_weights_file(tmp_path):
    root = tmp_path / "runs"
    code, out, err = run_tool(reproduce_main, ["--table", "2", "--dry-run", "--root", str(root)])
    assert code == 0 and "CHECK" not in err  # --dry-run alone checks nothing
    code, out, err = run_tool(reproduce_main, ["--table", "2", "--dry-run", "--check", "--root", str(root)])
    assert code == 1 and len(out.strip().splitlines()) == 48 * 3  # the commands are still listed
    failed = [line for line in err.splitlines() if line.startswith("CHECK FAILED")]
    assert len(failed) == 5 * 6  # every cell of the five user-supplied pre-trainings, once (not per seed)
    for tag in ("r50simclr", "r50barlowtwins", "r50clip", "vitb32clip", "vitb16clip"):
        assert sum(f"--weights {tag}=FILE" in line for line in failed) == 6
    assert "checked 48 cells: 30 with problems" in err and not root.exists()  # nothing started
    code, _, err = run_tool(reproduce_main, ["--table", "3", "--dry-run", "--check", "--root", str(root)])
    assert code == 0 and "checked 42 cells: 0 with problems" in err
    code, _, err = run_tool(reproduce_main, ["--table", "5", "--cells", "cars_r50_ft", "--dry-run", "--check",
                                             "--root", str(root), "SOLVER.NOPE", "1"])
    assert code == 1 and "CHECK FAILED cell cars_r50_ft" in err and "SOLVER.NOPE" in err


def test_summarize_names_under_each_table_what_is_our_reconstruction(tmp_path):
    for name, table in grid.TABLES.items():
        assert table.reconstructed, name
        code, out, _ = run_tool(lambda argv: summary.main(argv) and 0, ["--table", name, "--root", str(tmp_path)])
        section = out.split("Our reconstruction, not the paper's (docs/fidelity.md):\n", 1)
        assert len(section) == 2, name
        assert section[1].splitlines()[:len(table.reconstructed)] == [f"- {line}" for line in table.reconstructed]
    assert "every row, column and cell" in grid.get_table("4").reconstructed[0]


def test_missing_user_weights_name_the_key_and_the_file_wanted(tmp_path):
    runs = plan.build_runs(grid.get_table("1"), str(tmp_path), seeds=[0], cell_ids=["cars_r50simclr_ft"])
    with pytest.raises(FileNotFoundError, match=r"MODEL\.WEIGHTS = 'weights/simclr_resnet50\.pth'.*SimCLR.*"
                                                r"--weights r50simclr=FILE"):
        status.check_runs(runs, REPO)
    weights = tmp_path / "simclr.pth"
    weights.write_bytes(b"")
    runs = plan.build_runs(grid.get_table("1"), str(tmp_path), seeds=[0], cell_ids=["cars_r50simclr_ft"],
                                weights=plan.parse_weights([f"r50simclr={weights}"]))
    status.check_runs(runs, REPO)  # exists: checked, not read
    cfg = load_cfg(os.path.join(REPO, "configs/classification/cars_r50clip_adarand.yaml"))
    with pytest.raises(FileNotFoundError, match=r"MODEL\.WEIGHTS = 'weights/clip_RN50\.pth'.*state dict of CLIP RN50"):
        build_model(cfg, num_classes=3)
    with pytest.raises(ValueError, match="TAG=FILE"):
        plan.parse_weights(["simclr=/x.pth"])


class FakeTower(nn.Module):
    output_dim = 4

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(3, 4)

    def forward(self, x):
        return self.proj(x.mean(dim=(2, 3)))


def test_clip_file_is_read_with_weights_only_and_loaded_strictly_into_the_image_tower(tmp_path, monkeypatch):
    """open_clip stands in as a stub: what is under test is our reading and key mapping of the file."""
    monkeypatch.setitem(sys.modules, "open_clip", types.SimpleNamespace(
        create_model=lambda arch, pretrained=None: types.SimpleNamespace(visual=FakeTower())))
    source = FakeTower()
    state = {f"module.visual.{k}": v for k, v in source.state_dict().items()}
    state["module.transformer.weight"] = torch.ones(2)  # the text tower is dropped
    path = tmp_path / "clip.pth"
    torch.save(state, path)
    model = backbones.build_classifier("clip:RN50", 3, weights=str(path))
    assert torch.equal(model.backbone.proj.weight, source.proj.weight) and model.feat_dim == 4
    torch.save({"visual.proj.weight": source.proj.weight}, path)  # a key missing: strict load refuses
    with pytest.raises(RuntimeError, match="proj.bias"):
        backbones.build_classifier("clip:RN50", 3, weights=str(path))
    torch.save({"visual.proj.weight": types.SimpleNamespace()}, path)  # not tensors: weights_only refuses
    with pytest.raises(ValueError, match="refusing to load weights file \\(MODEL.WEIGHTS\\)"):
        backbones.build_classifier("clip:RN50", 3, weights=str(path))


def test_interrupted_run_resumes_and_finished_run_is_skipped(tmp_path):
    run, = plan.build_runs(grid.get_table("5"), str(tmp_path), seeds=[1], cell_ids=["cars_r50_ft"])
    assert run.status() == "new" and "--resume" not in run.argv()
    os.makedirs(run.output_dir)
    open(os.path.join(run.output_dir, "last.pth"), "w").close()
    assert run.status() == "resume" and "--resume" in run.argv()
    _write_results(run)
    assert run.status() == "done"


TINY = ["MODEL.BACKBONE", "tiny_cnn", "MODEL.WEIGHTS", "", "INPUT.SIZE", "16", "SOLVER.EPOCHS", "1",
        "SOLVER.BATCH_SIZE", "4", "SOLVER.MILESTONES", "[1]", "DATASET.VAL_FRACTION", "0.25",
        "DATALOADER.NUM_WORKERS", "0", "TEST.BATCH_SIZE", "16", "AMP", "off"]


@pytest.mark.slow
def test_launch_runs_a_tiny_grid_locally_then_summarize_prints_it(tmp_path):
    """Two Table-5 cells x 1 seed through submitit's local executor on a fake Stanford Cars tree."""
    data = fake_trees.make_fake("cars", tmp_path / "data", num_classes=3, per_class=8)
    root = tmp_path / "runs"
    argv = ["--table", "5", "--cells", "cars_r50_ft", "cars_r50_fnp", "--seeds", "0", "--root", str(root),
            "--data-dir", os.path.dirname(data), "--launch", "--no-progress", *TINY]
    code, _, err = run_tool(reproduce_main, argv)
    assert code == 0, err
    results = {m: json.load(open(root / f"cars_r50_{m}" / "seed0" / "results.json")) for m in ("ft", "fnp")}
    assert results["fnp"]["method"] == "fnp" and results["ft"]["dataset"] == "cars"

    code, table, _ = run_tool(summary.main, ["--table", "5", "--root", str(root)])
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ")[1:]
            for line in table.splitlines() if line.startswith("| ")}
    ft = 100 * results["ft"]["test_top1"]
    assert rows["Fine-tuning"][:3] == [f"{ft:.2f} ± 0.00 (1)", "88.29", f"{ft - 88.29:+.2f}"]
    assert rows["AdaRand"][0] == paper_table.MISSING and rows["AdaRand"][1] == "91.17"
    assert rows["UOT"][0] == "not implemented" and rows["UOT"][-2:] == ["12.405", "14,293 |"]  # time, memory

    # a finished run is skipped; one whose results.json is gone but last.pth is there resumes
    stamp = os.path.getmtime(root / "cars_r50_ft" / "seed0" / "results.json")
    os.remove(root / "cars_r50_fnp" / "seed0" / "results.json")
    code, _, err = run_tool(reproduce_main, argv)
    assert code == 0 and "1 finished, 1 to resume, 0 new" in err
    assert os.path.getmtime(root / "cars_r50_ft" / "seed0" / "results.json") == stamp
    assert json.load(open(root / "cars_r50_fnp" / "seed0" / "results.json"))["method"] == "fnp"


def test_a_position_with_several_cells_shows_the_best_and_std_is_over_seeds(tmp_path):
    """Table 2's RandReg-Best: the prior with the highest mean; std is the sample std over seeds."""
    accuracies = {"randreg-uniform": [0.80, 0.84], "randreg-normal": [0.86, 0.90], "randreg-pretrained": [0.70]}
    for method, values in accuracies.items():
        for seed, value in enumerate(values):
            run_dir = tmp_path / f"cars_vitb32clip_{method}" / f"seed{seed}"
            run_dir.mkdir(parents=True)
            (run_dir / "results.json").write_text(json.dumps({"method": method, "test_top1": value}))
    table = grid.get_table("2")
    best = paper_table.position_result(table, "CLIP / ViT-B/32", "RandReg-Best", str(tmp_path))
    assert (best.cell_id, best.n) == ("cars_vitb32clip_randreg-normal", 2)
    assert best.mean == pytest.approx(88.0) and best.std == pytest.approx(2 * 2 ** 0.5)
    row = next(x for x in paper_table.render(table, str(tmp_path)).splitlines() if x.startswith("| CLIP / ViT-B/32"))
    assert f"88.00 ± 2.83 (2) cars_vitb32clip_randreg-normal | 86.83 | {88.0 - 86.83:+.2f}" in row


def test_slurm_executor_gets_partition_gpus_cpus_and_time(tmp_path, monkeypatch):
    """submitit's SLURM executor needs ``srun`` on PATH to be built: a stub stands in (nothing is submitted)."""
    srun = tmp_path / "bin" / "srun"
    srun.parent.mkdir()
    srun.write_text("#!/bin/sh\nexit 0\n")
    srun.chmod(0o755)
    monkeypatch.setenv("PATH", f"{srun.parent}{os.pathsep}{os.environ['PATH']}")
    executor = launcher.make_executor(str(tmp_path / "jobs"), "slurm", partition="gpu", gpus=4, cpus=8,
                                       timeout_min=90)
    params = executor._executor.parameters
    assert (params["partition"], params["gpus_per_node"], params["cpus_per_task"], params["time"]) == ("gpu", 4, 8, 90)
    assert (params["nodes"], params["ntasks_per_node"]) == (1, 1)


def test_digits_study_has_four_methods_three_fractions_a_longer_arm_and_twenty_seeds(tmp_path):
    """`--table digits`: 12 + 2 cells x 20 seeds = 280 runs; each cell loads as the shipped digits config
    at its fraction and epochs, nothing else changed."""
    table = grid.get_table("digits")
    runs = plan.build_runs(table, str(tmp_path))
    assert len(runs) == 280 and sorted({r.seed for r in runs}) == list(range(20))
    shipped = load_cfg(os.path.join(REPO, "configs/classification/digits_mobilenetv2_adarand.yaml"))
    by_cell = {}
    for run in runs:
        cfg = status.load_run_cfg(run, REPO)
        by_cell[run.cell.id] = (cfg.MODEL.ADARAND.METHOD, round(cfg.DATASET.FRACTION, 2), cfg.SOLVER.EPOCHS)
        assert (cfg.SEED, cfg.OUTPUT_DIR) == (run.seed, run.output_dir)
        assert (cfg.SOLVER.BASE_LR, cfg.MODEL.ADARAND.LAMBDA, cfg.INPUT.SIZE) == \
            (shipped.SOLVER.BASE_LR, shipped.MODEL.ADARAND.LAMBDA, shipped.INPUT.SIZE)
    methods = {"ft": "none", "fnp": "fnp", "randreg-cp": "randreg-cp", "adarand": "adarand"}
    expected = {f"digits{p}_mobilenetv2_{m}": (methods[m], p / 100, 8) for p in (10, 20, 50) for m in methods}
    expected.update({f"digits20_mobilenetv2_{m}_30ep": (methods[m], 0.2, 30) for m in ("randreg-cp", "adarand")})
    assert by_cell == expected


def test_extra_test_sets_give_the_clip_imagenet_columns_from_one_run(tmp_path):
    """DATASET.EXTRA_TESTS: the selected model is also tested on ImageNet-R read beside the ImageNet tree;
    the clip-imagenet table shows test_top1@imagenet-r in its ImageNet-R column."""
    from adarand.classification import cli, datasets
    from adarand.classification.transforms import build_transforms

    imagenet = fake_trees.make_fake("imagenet", tmp_path / "data", num_classes=3, per_class=8)
    imagenet_r = os.path.join(os.path.dirname(imagenet), "imagenet-r")  # beside the ImageNet tree
    for wnid in sorted(os.listdir(os.path.join(imagenet, "val")))[1:]:  # ImageNet-R: 2 of the 3 classes
        os.makedirs(os.path.join(imagenet_r, wnid))
        for name in os.listdir(os.path.join(imagenet, "val", wnid)):
            os.link(os.path.join(imagenet, "val", wnid, name), os.path.join(imagenet_r, wnid, name))
    out = tmp_path / "runs" / "imagenet_vitb16clip_ft" / "seed0"
    opts = ["MODEL.BACKBONE", "tiny_cnn", "MODEL.WEIGHTS", "", "MODEL.ADARAND.METHOD", "none", "DATASET.NAME",
            "imagenet", "DATASET.ROOT", imagenet, "DATASET.EXTRA_TESTS", "['imagenet-r']", "INPUT.SIZE", "16",
            "SOLVER.EPOCHS", "1", "SOLVER.BATCH_SIZE", "8", "DATALOADER.NUM_WORKERS", "0", "OUTPUT_DIR", str(out)]
    results = cli.main(["--no-progress", *opts])
    # reference: the selected checkpoint on ImageNet-R, its 2 classes' logits kept, argmax = label
    model = backbones.build_classifier("tiny_cnn", 3).eval()
    model.load_state_dict(torch.load(out / "best.pth", map_location="cpu", weights_only=True)["model"])
    test = datasets.build_dataset("imagenet-r", imagenet_r, "test",
                                  transform=build_transforms(False, size=16, mean=model.input_mean, std=model.input_std))
    correct = 0
    with torch.no_grad():
        for image, label in test:
            logits = datasets.restrict_logits(model(image[None]), test.imagenet_class_indices)
            correct += int(logits.argmax(1).item() == label)
    assert results["test_top1@imagenet-r"] == pytest.approx(correct / len(test))
    assert json.load(open(out / "results.json"))["test_top1@imagenet-r"] == results["test_top1@imagenet-r"]
    table = grid.get_table("clip-imagenet")
    ours = paper_table.position_result(table, "Fine-tuning", "ImageNet-R", str(tmp_path / "runs"))
    assert ours.mean == pytest.approx(100 * correct / len(test)) and ours.n == 1
    assert paper_table.position_result(table, "Fine-tuning", "ImageNet", str(tmp_path / "runs")).mean == \
        pytest.approx(100 * results["test_top1"])


# ---------------------------------------------- issue 20, items 1 and 3: the grid owns its runs

@pytest.mark.parametrize("argv,key", [(["--table", "1", "SEED", "7"], "SEED"),
                                      (["--table", "1", "OUTPUT_DIR", "/tmp/x"], "OUTPUT_DIR"),
                                      (["--table", "alpha", "MODEL.ADARAND.ALPHA", "0.2"], "MODEL.ADARAND.ALPHA"),
                                      (["--table", "digits", "DATASET.FRACTION", "1.0"], "DATASET.FRACTION"),
                                      (["--table", "3", "--data-dir", "/data", "DATASET.ROOT", "/x"], "DATASET.ROOT")])
def test_keys_the_grid_sets_cannot_be_overridden(argv, key, tmp_path):
    for mode in ("--dry-run", "--launch"):
        with pytest.raises(ValueError, match=f"override {key} .*the grid sets {key} itself"):
            reproduce_main(argv[:2] + ["--root", str(tmp_path), mode] + argv[2:])
    code, out, _ = run_tool(reproduce_main, ["--table", "1", "--root", str(tmp_path), "--dry-run", "SOLVER.EPOCHS", "1"])
    assert code == 0 and out.count("SEED 0 ") == 20 and out.count("SEED 2 ") == 20


def _write_results(run, text=None):
    """``results.json``: ``text``, or a finished run's record of the cell's method."""
    with open(os.path.join(run.output_dir, "results.json"), "w") as f:
        f.write(json.dumps({"method": run.cell.method, "seed": run.seed, "dataset": run.cell.dataset, "fraction": 1.0,
                            "backbone": "resnet50", "epochs": 8, "test_top1": 0.5}) if text is None else text)


def _record_run(run, cfg_opts=(), results=True):
    """A run directory as train_cls.py leaves it: config.yaml (the run's config, plus ``cfg_opts``), and
    results.json or last.pth."""
    os.makedirs(run.output_dir)
    cfg = load_cfg(os.path.join(REPO, run.cell.config), list(run.opts) + list(cfg_opts))
    with open(os.path.join(run.output_dir, "config.yaml"), "w") as f:
        f.write(cfg.dump())
    if results:
        _write_results(run)
    else:
        open(os.path.join(run.output_dir, "last.pth"), "w").close()


def test_launch_counts_a_run_finished_only_when_its_config_is_the_grids(tmp_path, monkeypatch):
    """A smoke run (SOLVER.EPOCHS 1) left in the root is not the reproduction: refused, or moved and rerun."""
    launched = []
    monkeypatch.setattr(reproduce, "launch", lambda runs, *a, **k: launched.extend(runs) or {})
    monkeypatch.setattr(reproduce, "check_runs", lambda runs, repo_root=".": {r: status.load_run_cfg(r, repo_root)
                                                                              for r in runs})
    table = grid.get_table("5")
    smoke, same, partial = plan.build_runs(table, str(tmp_path), seeds=[0],
                                                cell_ids=["cars_r50_ft", "cars_r50_fnp", "cars_r50_bss"])
    _record_run(smoke, ["SOLVER.EPOCHS", "1"])
    _record_run(same, ["LOG_PERIOD", "3"])  # a key that leaves the results unchanged
    _record_run(partial, ["SOLVER.BASE_LR", "0.5"], results=False)
    argv = ["--table", "5", "--cells", "cars_r50_ft", "cars_r50_fnp", "cars_r50_bss", "--seeds", "0",
            "--root", str(tmp_path), "--launch", "--no-progress"]
    code, _, err = run_tool(reproduce_main, argv)
    assert code == 1 and not launched
    assert f"DIFFERS {smoke.output_dir}: recorded -> grid: SOLVER.EPOCHS: 1 -> 200" in err
    assert f"DIFFERS {partial.output_dir}: recorded -> grid: SOLVER.BASE_LR: 0.5 -> 0.01" in err
    assert same.output_dir not in err and "--rerun-differing" in err

    code, _, err = run_tool(reproduce_main, argv + ["--rerun-differing"])
    assert code == 0 and "1 finished, 0 to resume, 2 new" in err
    assert sorted(r.output_dir for r in launched) == sorted([smoke.output_dir, same.output_dir, partial.output_dir])
    assert os.path.isfile(os.path.join(smoke.output_dir + ".old1", "results.json"))
    assert not os.path.exists(smoke.output_dir) and os.path.isfile(os.path.join(same.output_dir, "results.json"))


def test_a_run_changed_on_resume_is_not_the_grids(tmp_path, monkeypatch):
    monkeypatch.setattr(reproduce, "check_runs", lambda runs, repo_root=".": None)
    run, = plan.build_runs(grid.get_table("5"), str(tmp_path), seeds=[0], cell_ids=["cars_r50_ft"])
    _record_run(run)
    assert status.recorded_differences(run, REPO) == {}
    with open(os.path.join(run.output_dir, "config_history.json"), "w") as f:
        json.dump([{"epoch": 3, "changes": {"SOLVER.BASE_LR": [0.1, 0.01]}}], f)
    assert status.recorded_differences(run, REPO) == {
        "SOLVER.BASE_LR (changed on resume at epoch 3)": [0.1, 0.01]}


def test_a_study_of_ours_shows_no_paper_columns_and_marks_settings_not_run(tmp_path):
    """The digits study has no published numbers: our column alone, and FT in the 30-epoch arm is 'not run'."""
    text = paper_table.render(grid.get_table("digits"), str(tmp_path))
    header, = [line for line in text.splitlines() if line.startswith("|  |")]
    assert header == "|  | 10% | 20% | 50% | 20%, 30 epochs |"
    fine_tuning, = [line for line in text.splitlines() if line.startswith("| Fine-tuning")]
    assert fine_tuning == "| Fine-tuning | — | — | — | not run |"
    assert "| UOT | not implemented |" in paper_table.render(grid.get_table("5"), str(tmp_path))


# ---------------------------------------------- issue 28, items 7, 8 and 16

@pytest.mark.parametrize("argv,key,value", [
    (["--table", "digits", "--cells", "digits20_mobilenetv2_ft"], "MODEL.ADARAND.METHOD", "adarand"),  # the method
    (["--table", "5", "--cells", "cars_r50_ft"], "BASELINE.METHOD", "l2sp"),
    (["--table", "5", "--cells", "cars_r50_l2sp"], "BASELINE.ALPHA", "0.1"),  # set by the cell's config file
    (["--table", "4", "--cells", "cars10_r50_ft"], "DATASET.NAME", "pets"),  # by the cell config it inherits from
])
def test_an_override_cannot_change_what_defines_a_cell(argv, key, value, tmp_path):
    for mode in ("--dry-run", "--launch"):
        with pytest.raises(ValueError, match=f"override {key} {value}: the grid sets {key} itself"):
            reproduce_main(argv + ["--root", str(tmp_path), mode, key, value])
    assert os.listdir(tmp_path) == []
    # the shared recipe (Base-*.yaml) stays open to overrides, e.g. a smaller input for a smoke test
    code, out, _ = run_tool(reproduce_main, argv + ["--root", str(tmp_path), "--seeds", "0", "--dry-run",
                                                    "INPUT.SIZE", "32"])
    assert code == 0 and shlex.split(out)[-2:] == ["INPUT.SIZE", "32"]


def test_summarize_table_refuses_a_run_of_another_method_in_a_cells_directory(tmp_path):
    cells = ["digits20_mobilenetv2_ft", "digits20_mobilenetv2_adarand"]
    runs = plan.build_runs(grid.get_table("digits"), str(tmp_path), seeds=[0, 1], cell_ids=cells)
    for run in runs:
        os.makedirs(run.output_dir)
        _write_results(run)
    code, text, _ = run_tool(lambda argv: summary.main(argv) and 0, ["--table", "digits", "--root", str(tmp_path)])
    fine_tuning, = [line for line in text.splitlines() if line.startswith("| Fine-tuning")]
    assert fine_tuning == "| Fine-tuning | — | 50.00 ± 0.00 (2) | — | not run |"
    intruder = runs[0]  # an AdaRand run in the FT cell's directory, as an override of the method made it
    assert intruder.cell.id == "digits20_mobilenetv2_ft"
    _write_results(intruder, json.dumps({"method": "adarand", "seed": 0, "test_top1": 0.9}))
    path = os.path.join(intruder.output_dir, "results.json")
    for extra in ([], ["--paired", "ft"]):
        with pytest.raises(ValueError, match=f"{path}: the run recorded method 'adarand', but cell "
                                             "digits20_mobilenetv2_ft runs 'ft'"):
            run_tool(summary.main, ["--table", "digits", "--root", str(tmp_path), *extra])


@pytest.mark.parametrize("text", ["", '{"method": "ft", "test_top1": 0.', "{}", "[]",
                                  '{"method": "ft", "test_top1": NaN}', '{"method": "ft", "test_top1": 85.2}'])
def test_a_partial_results_json_is_resumed_or_run_again_never_skipped(text, tmp_path, monkeypatch):
    """Only a readable record holding a valid test_top1 is finished: with last.pth the run resumes, without
    it runs again; both are listed with what is wrong."""
    launched = []
    monkeypatch.setattr(reproduce, "launch", lambda runs, *a, **k: launched.extend(r for r in runs
                                                                                   if r.status() != "done") or {})
    monkeypatch.setattr(reproduce, "check_runs", lambda runs, repo_root=".": {r: status.load_run_cfg(r, repo_root)
                                                                              for r in runs})
    resumable, fresh, finished = plan.build_runs(grid.get_table("5"), str(tmp_path), seeds=[0, 1, 2],
                                                      cell_ids=["cars_r50_ft"])
    _record_run(resumable, results=False)
    _record_run(fresh)
    _record_run(finished)
    for run in (resumable, fresh):
        _write_results(run, text)
    code, _, err = run_tool(reproduce_main, ["--table", "5", "--cells", "cars_r50_ft", "--seeds", "0", "1", "2",
                                             "--root", str(tmp_path), "--launch", "--no-progress"])
    assert code == 0 and "1 finished, 1 to resume, 1 new" in err
    assert launched == [resumable, fresh]
    for run, then in ((resumable, "resumed from last.pth"), (fresh, "it runs again")):
        line, = [x for x in err.splitlines() if x.startswith(f"UNFINISHED {run.output_dir}: ")]
        assert os.path.join(run.output_dir, "results.json") in line and line.endswith(then)
    assert finished.output_dir not in err


@pytest.mark.parametrize("argv", [
    ["--dry-run", "--seeds", "0", "--cells", "cars_r50_ft", "cars_r50_fnp", "SOLVER.EPOCHS", "1"],
    ["--dry-run", "--cells", "cars_r50_ft", "cars_r50_fnp", "--seeds", "0", "SOLVER.EPOCHS", "1"],
    ["--dry-run", "--cells", "cars_r50_ft", "cars_r50_fnp", "--seeds", "0", "--", "SOLVER.EPOCHS", "1"],
    ["--cells", "cars_r50_ft", "cars_r50_fnp", "LOG_PERIOD", "5", "--seeds", "0", "--dry-run", "SOLVER.EPOCHS", "1"],
])
def test_overrides_after_cells_or_seeds_go_to_every_run(argv, tmp_path):
    code, out, err = run_tool(reproduce_main, ["--table", "5", "--root", str(tmp_path), *argv])
    commands = [shlex.split(line) for line in out.splitlines()]
    assert code == 0 and len(commands) == 2, err
    assert [c[3] for c in commands] == ["configs/classification/cars_r50_ft.yaml",
                                        "configs/classification/cars_r50_fnp.yaml"]
    assert all(c[-2:] == ["SOLVER.EPOCHS", "1"] and ("LOG_PERIOD" in c) == ("LOG_PERIOD" in argv) for c in commands)


def test_a_seed_that_is_not_a_number_is_a_clear_error(tmp_path, capsys):
    for seeds, message in ((["0", "x"], "--seeds 0 x: seeds are integers"),
                           (["SOLVER.EPOCHS", "1"], "--seeds SOLVER.EPOCHS 1: give the seeds before")):
        with pytest.raises(SystemExit):
            reproduce_main(["--table", "5", "--root", str(tmp_path), "--dry-run", "--seeds", *seeds])
        assert message in capsys.readouterr().err
