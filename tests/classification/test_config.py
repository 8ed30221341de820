"""Config schema: defaults, _BASE_ inheritance, overrides, and errors that name the key."""
import glob
import os

import pytest

from adarand.classification.config import get_cfg, load_cfg

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "classification")


def test_defaults_are_the_paper_resnet50_recipe():
    cfg = get_cfg()
    assert (cfg.SOLVER.OPTIMIZER, cfg.SOLVER.BASE_LR, cfg.SOLVER.MOMENTUM, cfg.SOLVER.NESTEROV) == ("sgd", 0.01, 0.9, True)
    assert (cfg.SOLVER.EPOCHS, list(cfg.SOLVER.MILESTONES), cfg.SOLVER.GAMMA) == (200, [60, 120, 160], 0.1)
    assert (cfg.SOLVER.BATCH_SIZE, cfg.INPUT.SIZE, cfg.DATASET.VAL_FRACTION) == (64, 224, 0.1)


def test_base_inheritance_and_overrides(tmp_path):
    base = tmp_path / "Base.yaml"
    base.write_text("SOLVER:\n  EPOCHS: 7\n  BASE_LR: 0.5\nMODEL:\n  ADARAND:\n    METHOD: fnp\n")
    leaf = tmp_path / "leaf.yaml"
    leaf.write_text('_BASE_: "Base.yaml"\nMODEL:\n  ADARAND:\n    METHOD: adarand\n')
    cfg = load_cfg(str(leaf), ["SOLVER.BASE_LR", "0.1"])
    assert (cfg.SOLVER.EPOCHS, cfg.SOLVER.BASE_LR, cfg.MODEL.ADARAND.METHOD) == (7, 0.1, "adarand")
    assert cfg.is_frozen()


def test_unknown_key_in_file_names_file_and_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("SOLVER:\n  EPOCHZ: 3\n")
    with pytest.raises(KeyError, match=r"bad\.yaml.*SOLVER\.EPOCHZ"):
        load_cfg(str(bad))


def test_unknown_override_and_bad_choice():
    with pytest.raises(KeyError, match="MODEL.NOPE"):
        load_cfg("", ["MODEL.NOPE", "1"])
    with pytest.raises(ValueError, match="SOLVER.OPTIMIZER"):
        load_cfg("", ["SOLVER.OPTIMIZER", "lbfgs"])
    with pytest.raises(ValueError, match="KEY VALUE"):
        load_cfg("", ["SOLVER.EPOCHS"])


def test_every_shipped_config_loads():
    files = sorted(glob.glob(os.path.join(CONFIG_DIR, "*.yaml")))
    assert len(files) >= 12 + 5
    for path in files:
        load_cfg(path)
    vit = load_cfg(os.path.join(CONFIG_DIR, "cars_vitb16_adarand.yaml"))
    assert (vit.SOLVER.OPTIMIZER, vit.SOLVER.BASE_LR, vit.SOLVER.LR_SCHEDULE) == ("adamw", 3e-5, "cosine_7_16")
    sub = load_cfg(os.path.join(CONFIG_DIR, "cars25_r50_adarand.yaml"))
    assert (sub.DATASET.NAME, sub.DATASET.FRACTION, sub.MODEL.ADARAND.METHOD) == ("cars", 0.25, "adarand")


def test_keys_of_earlier_releases_name_their_new_key(tmp_path):
    old = tmp_path / "old.yaml"
    old.write_text("REGULARIZER:\n  NAME: adarand\n")
    with pytest.raises(KeyError, match=r"old\.yaml.*REGULARIZER.*MODEL\.ADARAND"):
        load_cfg(str(old))
    with pytest.raises(KeyError, match=r"REGULARIZER\.NAME.*MODEL\.ADARAND\.METHOD"):
        load_cfg("", ["REGULARIZER.NAME", "adarand"])
    with pytest.raises(KeyError, match=r"REGULARIZER\.LAMBDA.*MODEL\.ADARAND\.LAMBDA"):
        load_cfg("", ["REGULARIZER.LAMBDA", "2.0"])
    baseline = tmp_path / "baseline.yaml"
    baseline.write_text("BASELINE:\n  NAME: l2sp\n")
    with pytest.raises(KeyError, match=r"baseline\.yaml.*BASELINE\.NAME.*BASELINE\.METHOD"):
        load_cfg(str(baseline))


def test_regularizer_values_are_checked_at_load_naming_the_key():
    with pytest.raises(ValueError, match=r"MODEL\.ADARAND\.LAMBDA = -1\.0"):
        load_cfg("", ["MODEL.ADARAND.LAMBDA", "-1.0"])
    with pytest.raises(ValueError, match=r"MODEL\.ADARAND\.PRIOR_LR_SCHEDULE"):
        load_cfg("", ["MODEL.ADARAND.PRIOR_LR_SCHEDULE", "linear"])
