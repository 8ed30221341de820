"""--resume of tools/train_cls.py with a changed config (issue 20, item 2): refused before anything
is written unless the keys are safe or --allow-config-change is given; then recorded with the epoch."""
import json
import os

import pytest
import yaml

from adarand.classification import cli
from adarand.runs.resume import ConfigChanged

from tiny_runs import tiny_opts  # noqa: E402  (tests/classification is on sys.path under pytest)

METHOD = {"MODEL.ADARAND.METHOD": "adarand", "DIAGNOSTICS": False}


def stamps(out):
    """Modification times of the run's files (the lock file excepted: it records the holder's pid)."""
    return {name: os.stat(out / name).st_mtime_ns for name in os.listdir(out) if name != ".lock"}


def one_epoch_run(data_root, out):
    cli.main(["--no-progress"] + tiny_opts(data_root, out, **{"SOLVER.EPOCHS": 1, **METHOD}))
    return stamps(out)


@pytest.mark.parametrize("key,value,shown", [("DATASET.FRACTION", 0.5, "1.0 -> 0.5"),
                                              ("MODEL.ADARAND.LAMBDA", 2.0, "1.0 -> 2.0"),
                                              ("INPUT.SIZE", 24, "16 -> 24")])
def test_resume_with_another_experiment_is_refused_before_writing(data_root, tmp_path, key, value, shown):
    before = one_epoch_run(data_root, tmp_path)
    argv = ["--resume", "--no-progress"] + tiny_opts(data_root, tmp_path, **{"SOLVER.EPOCHS": 2, **METHOD, key: value})
    with pytest.raises(ConfigChanged, match=f"{key}: {shown}.*--allow-config-change") as err:
        cli.main(argv)
    assert "SOLVER.EPOCHS: 1 -> 2" not in str(err.value)  # a safe change is not a reason to refuse
    assert stamps(tmp_path) == before


def test_extending_epochs_is_safe_and_recorded_with_its_epoch(data_root, tmp_path):
    one_epoch_run(data_root, tmp_path)
    results = cli.main(["--resume", "--no-progress"] + tiny_opts(
        data_root, tmp_path, **{"SOLVER.EPOCHS": 2, "DATALOADER.NUM_WORKERS": 0, **METHOD}))
    assert results["epochs"] == 2
    assert results["config_changes"] == [{"epoch": 2, "changes": {"SOLVER.EPOCHS": [1, 2]}}]
    assert json.load(open(tmp_path / "results.json"))["config_changes"] == results["config_changes"]


def test_allowed_change_is_recorded_in_config_yaml_and_results(data_root, tmp_path):
    one_epoch_run(data_root, tmp_path)
    results = cli.main(["--resume", "--allow-config-change", "--no-progress"] + tiny_opts(
        data_root, tmp_path, **{"SOLVER.EPOCHS": 2, "SOLVER.BASE_LR": 0.02, **METHOD}))
    expected = {"epoch": 2, "changes": {"SOLVER.BASE_LR": [0.01, 0.02], "SOLVER.EPOCHS": [1, 2]}}
    assert results["config_changes"] == [expected]
    text = open(tmp_path / "config.yaml").read()
    assert "# changed on resume, from epoch 2: SOLVER.BASE_LR: 0.01 -> 0.02; SOLVER.EPOCHS: 1 -> 2" in text
    cfg = yaml.safe_load(text)  # still the loadable config, now the latest one
    assert (cfg["SOLVER"]["BASE_LR"], cfg["SOLVER"]["EPOCHS"]) == (0.02, 2)
    # a second resume with the same config changes nothing more and keeps the record
    results = cli.main(["--resume", "--no-progress"] + tiny_opts(
        data_root, tmp_path, **{"SOLVER.EPOCHS": 2, "SOLVER.BASE_LR": 0.02, **METHOD}))
    assert results["config_changes"] == [expected]
