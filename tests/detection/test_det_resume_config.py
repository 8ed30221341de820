"""--resume of tools/train_net.py with a changed config (issue 20, item 2): refused before anything is
written unless the keys are safe or --allow-config-change is given; then recorded with the iteration."""
import json
import os

import pytest
import yaml
from detectron2.engine import default_argument_parser
from faults import killed_during_save
from tiny import BASE_CONFIG, tiny_cfg, tiny_opts

from adarand.detection import setup_cfg
from adarand.runs.output_dir import release_output_dir
from adarand.runs.resume import DET_SAFE_RESUME_KEYS, ConfigChanged, add_resume_arguments


def _interrupted_run(out):
    """What a run stopped after its checkpoint of iteration 1 leaves: config.yaml and last_checkpoint."""
    out.mkdir()
    (out / "config.yaml").write_text(tiny_cfg(out, max_iter=4).dump())
    (out / "last_checkpoint").write_text("model_0000001.pth")
    return {name: os.stat(out / name).st_mtime_ns for name in os.listdir(out)}


def _setup(out, *argv, max_iter=4, **changes):
    opts = tiny_opts(out, max_iter=max_iter, **changes)
    args = add_resume_arguments(default_argument_parser(), DET_SAFE_RESUME_KEYS, "iteration").parse_args(
        ["--config-file", BASE_CONFIG, "--resume", *argv, *[str(x) for x in opts]])
    try:
        return setup_cfg(args, claim_output=True)
    finally:
        release_output_dir(out)


def test_resume_with_another_experiment_is_refused_before_writing(fake_voc, tmp_path):
    out = tmp_path / "run"
    before = _interrupted_run(out)
    with pytest.raises(ConfigChanged, match=r"MODEL.ADARAND.LAMBDA: 1.0 -> 2.0; MODEL.ROI_HEADS.IOU_THRESHOLDS: "
                                            r"\[0.5\] -> \[0.3\].*--allow-config-change"):
        _setup(out, **{"MODEL.ADARAND.LAMBDA": 2.0, "MODEL.ROI_HEADS.IOU_THRESHOLDS": [0.3]})
    assert {n: os.stat(out / n).st_mtime_ns for n in os.listdir(out) if n != ".lock"} == before


def test_safe_and_allowed_changes_are_recorded_with_their_iteration(fake_voc, tmp_path):
    out = tmp_path / "run"
    _interrupted_run(out)
    _setup(out, max_iter=6)  # extending: safe
    _setup(out, "--allow-config-change", max_iter=6, **{"MODEL.ADARAND.LAMBDA": 2.0})
    history = json.load(open(out / "config_history.json"))
    assert history == [{"iter": 2, "changes": {"SOLVER.MAX_ITER": [4, 6]}},
                       {"iter": 2, "changes": {"MODEL.ADARAND.LAMBDA": [1.0, 2.0]}}]
    text = open(out / "config.yaml").read()
    assert "# changed on resume, from iter 2: MODEL.ADARAND.LAMBDA: 1.0 -> 2.0" in text
    assert yaml.safe_load(text)["MODEL"]["ADARAND"]["LAMBDA"] == 2.0


def test_resume_from_model_final_records_the_recorded_max_iter(fake_voc, tmp_path):
    """model_final.pth of a 4-iteration run: the extension takes effect at iteration 4, not the new max_iter."""
    out = tmp_path / "run"
    _interrupted_run(out)
    (out / "last_checkpoint").write_text("model_final.pth")
    _setup(out, max_iter=6)
    assert json.load(open(out / "config_history.json")) == [{"iter": 4, "changes": {"SOLVER.MAX_ITER": [4, 6]}}]


@pytest.mark.slow
def test_resume_removes_the_temporary_file_of_a_checkpoint_save_killed_midway(fake_voc, tmp_path):
    out = tmp_path / "run"
    _interrupted_run(out)
    left = killed_during_save(out / "model_0000003.pth")
    _setup(out)
    assert left.startswith(".model_0000003.pth.") and not (out / left).exists()
    assert not [name for name in os.listdir(out) if name.endswith(".tmp")]
