"""Checkpoints written when the box regularizations were submodules of the box predictors
(``roi_heads.box_predictor.adarand.*``, cascade ``roi_heads.box_predictor.<k>.adarand.*``) load into the
ROI heads that now own them (``roi_heads.adarand.<k>.*``)."""
import re

import pytest
import torch
from detectron2.modeling import build_model
from tiny import tiny_cfg

from adarand.detection import SafeDetectionCheckpointer, box_regularizations, check_initialised

CASCADE_ALL = {"MODEL.ROI_HEADS.NAME": "AdaRandCascadeROIHeads", "MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG": True,
               "MODEL.ADARAND.CASCADE_STAGES": "all"}


def _written(cfg):
    """A model whose priors hold values of their own and whose noise streams have drawn."""
    torch.manual_seed(0)
    model = build_model(cfg)
    gen = torch.Generator().manual_seed(3)
    for branch in box_regularizations(model):
        reg = branch.regularizer
        reg.prior.init_from_stats(torch.randn(reg.num_classes, reg.feat_dim, generator=gen),
                                  0.1 + torch.rand(reg.num_classes, reg.feat_dim, generator=gen))
        torch.randn(3, generator=branch.noise_generator(torch.device("cpu")))
    return model


def _old_format(state, old_prefix):
    """``state`` with the regularizations' keys where the older checkpoints hold them."""
    old = {}
    for key, value in state.items():
        match = re.fullmatch(r"roi_heads\.adarand\.(\d+)\.(.+)", key)
        old[old_prefix.format(k=match[1]) + match[2] if match else key] = value
    return old


@pytest.mark.parametrize("extra, old_prefix", [({}, "roi_heads.box_predictor.adarand."),
                                               (CASCADE_ALL, "roi_heads.box_predictor.{k}.adarand.")])
def test_a_checkpoint_with_the_regularizations_in_the_predictors_loads(fake_voc, tmp_path, extra, old_prefix):
    cfg = tiny_cfg(tmp_path, **extra)
    state = _written(cfg).state_dict()
    assert any(k.startswith("roi_heads.adarand.") and k.endswith("noise_state") for k in state)
    old = _old_format(state, old_prefix)
    assert not any(k.startswith("roi_heads.adarand.") for k in old)
    assert sum(k.startswith(old_prefix.format(k=2 if extra else "")) for k in old) > 0

    torch.manual_seed(1)
    model = build_model(cfg)
    model.load_state_dict(old)  # strict: no key left over, none missing
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key

    torch.save({"model": old}, tmp_path / "old.pth")
    torch.manual_seed(1)
    model = build_model(cfg)
    SafeDetectionCheckpointer(model, exact_shapes=True).load(str(tmp_path / "old.pth"))
    check_initialised(model)  # the priors came with the file
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
