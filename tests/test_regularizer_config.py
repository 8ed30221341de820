"""adarand.regularizer_config: the one path from a config node (CfgNode or dict) to a regularizer."""
import math

import pytest
from fvcore.common.config import CfgNode

import adarand
from adarand.regularizer_config import REGULARIZER_KEYS, build_regularizer_from_config, regularizer_options_from_config


def node(**changes):
    return {**REGULARIZER_KEYS, **changes}


@pytest.mark.parametrize("make", [dict, CfgNode], ids=["dict", "CfgNode"])
def test_options_are_those_the_method_takes(make):
    ada = regularizer_options_from_config(make(node(METHOD="adarand", LAMBDA=2.0, PRIOR_LR=0.1)), total_steps=7)
    assert ada == {"lam": 2.0, "alpha": 0.5, "prior_lr": 0.1, "prior_schedule": "cosine_7_16", "total_steps": 7}
    assert regularizer_options_from_config(make(node(METHOD="fnp", LAMBDA=0.3)), 7) == {"lam": 0.3}
    ptr = regularizer_options_from_config(make(node(METHOD="ptr", PTR_RATIO=5.0, PTR_LOSS="l2")), 7)
    assert (ptr["ratio"], ptr["loss"], "prior_lr" in ptr) == (5.0, "l2", False)
    assert regularizer_options_from_config(make(node(METHOD="none")), 7) == {"lam": 1.0}


def test_every_method_builds_from_the_defaults():
    for method in adarand.available_regularizers():
        reg = build_regularizer_from_config(node(METHOD=method, LAMBDA=0.25), num_classes=3, feat_dim=4, total_steps=5)
        assert isinstance(reg, adarand.Regularizer) and reg.lam == 0.25


@pytest.mark.parametrize("key, value", [("LAMBDA", -1.0), ("LAMBDA", math.nan), ("LAMBDA", "1"), ("ALPHA", 1.5),
                                        ("PRIOR_LR", 0.0), ("PRIOR_LR", math.inf), ("PRIOR_LR_SCHEDULE", "step"),
                                        ("PRIOR_LR", 1e38)])  # issue 20, item 10: was a bare float32 overflow
def test_bad_values_name_the_key_with_its_prefix(key, value):
    with pytest.raises(ValueError, match=rf"config key TRAIN\.REG\.{key} = "):
        regularizer_options_from_config(node(**{key: value}), 5, prefix="TRAIN.REG")


def test_unknown_method_is_refused():
    with pytest.raises(ValueError, match="unknown regularizer 'adarandd'"):
        build_regularizer_from_config(node(METHOD="adarandd"), 3, 4, 5)
