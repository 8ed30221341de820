"""MobileNetV2-FPN backbone: shapes, freezing, weight conversion, and real ImageNet behaviour."""
import hashlib
import math
import os
import subprocess
import sys
from unittest import mock

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("detectron2")
skdata = pytest.importorskip("skimage.data")
from detectron2.checkpoint import DetectionCheckpointer  # noqa: E402
from detectron2.config import get_cfg  # noqa: E402
from detectron2.layers import FrozenBatchNorm2d, ShapeSpec  # noqa: E402
from detectron2.modeling import build_backbone  # noqa: E402
from torch import nn  # noqa: E402
from torchvision.models import mobilenet_v2  # noqa: E402

from adarand.detection.mobilenet_fpn import (  # noqa: E402
    MobileNetV2Backbone,
    add_mobilenet_config,
    convert_torchvision_state_dict,
    default_weights_path,
)

MEAN = torch.tensor([123.675, 116.28, 103.53]).view(3, 1, 1)
STD = torch.tensor([58.395, 57.12, 57.375]).view(3, 1, 1)
EGYPTIAN_CAT, ESPRESSO = 285, 967
TOOL = os.path.join(os.path.dirname(__file__), "..", "..", "tools", "convert_mobilenet_weights.py")


def convert_main(argv):
    """tools/convert_mobilenet_weights.py in its own process (as `make demo` runs it); returns --out."""
    proc = subprocess.run([sys.executable, TOOL, *argv], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return argv[argv.index("--out") + 1]


def _cfg(**backbone):
    cfg = add_mobilenet_config(get_cfg())
    cfg.MODEL.BACKBONE.NAME = "build_mobilenetv2_fpn_backbone"
    cfg.MODEL.FPN.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    for key, value in backbone.items():
        setattr(cfg.MODEL.BACKBONE, key, value)
    return cfg


def _photo(array, size=224):
    """torchvision's ImageNet preprocessing: resize short side to 256, centre crop, normalise."""
    img = Image.fromarray(array)
    w, h = img.size
    s = 256 / min(w, h)
    img = img.resize((round(w * s), round(h * s)), Image.BILINEAR)
    w, h = img.size
    left, top = (w - size) // 2, (h - size) // 2
    x = torch.from_numpy(np.asarray(img.crop((left, top, left + size, top + size))).copy())
    return ((x.permute(2, 0, 1).float() - MEAN) / STD)[None]


@pytest.fixture(scope="module")
def torchvision_net():
    net = mobilenet_v2()
    net.load_state_dict(torch.load(default_weights_path(), map_location="cpu", weights_only=True))
    return net.eval()


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    return convert_main(["--out", str(tmp_path_factory.mktemp("w") / "mnv2_d2.pth")])


def test_fpn_outputs_have_r50_fpn_strides_and_shapes():
    backbone = build_backbone(_cfg(FREEZE_AT=0), ShapeSpec(channels=3))
    expected = {"p2": 4, "p3": 8, "p4": 16, "p5": 32, "p6": 64}
    assert {k: v.stride for k, v in backbone.output_shape().items()} == expected
    assert {k: v.channels for k, v in backbone.bottom_up.output_shape().items()} == {
        "res2": 24, "res3": 32, "res4": 96, "res5": 320}
    out = backbone(torch.randn(2, 3, 64, 96))
    for name, stride in expected.items():
        assert out[name].shape == (2, 256, math.ceil(64 / stride), math.ceil(96 / stride))


def test_freeze_at_follows_resnet_meaning_and_norm_is_configurable():
    net = MobileNetV2Backbone(norm="BN", freeze_at=2)  # stem + res2 = features[0:4]
    for i, block in enumerate(net.features):
        frozen = i < 4
        assert all(p.requires_grad != frozen for p in block.parameters()), i
        norms = {type(m) for m in block.modules() if isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d))}
        assert norms == ({FrozenBatchNorm2d} if frozen else {nn.BatchNorm2d}), i
    assert all(p.requires_grad for p in MobileNetV2Backbone(freeze_at=0).parameters())
    with pytest.raises(ValueError, match="OUT_FEATURES"):
        MobileNetV2Backbone(out_features=("res6",))
    with pytest.raises(ValueError, match="FREEZE_AT"):
        MobileNetV2Backbone(freeze_at=7)


def test_converter_renames_only_feature_keys():
    sd = {"features.0.0.weight": torch.ones(1), "features.0.1.num_batches_tracked": torch.tensor(3),
          "features.18.0.weight": torch.ones(1), "classifier.1.weight": torch.ones(1)}
    assert list(convert_torchvision_state_dict(sd)) == ["backbone.bottom_up.features.0.0.weight"]
    with pytest.raises(KeyError, match="layer1"):
        convert_torchvision_state_dict({"layer1.0.conv1.weight": torch.ones(1)})


@pytest.mark.slow
def test_converted_weights_load_with_no_missing_backbone_keys(converted, torchvision_net):
    holder = nn.Module()
    holder.backbone = build_backbone(_cfg(FREEZE_AT=2), ShapeSpec(channels=3))
    with mock.patch.object(DetectionCheckpointer, "_log_incompatible_keys") as log:
        DetectionCheckpointer(holder).load(converted)
    incompatible = log.call_args.args[0]
    assert not [k for k in incompatible.missing_keys if k.startswith("backbone.bottom_up.")]
    assert not incompatible.unexpected_keys
    ref = torchvision_net.state_dict()
    got = holder.backbone.bottom_up.state_dict()
    assert got.keys() == {k for k in ref if k.startswith("features.") and int(k.split(".")[1]) < 18
                          and not k.endswith("num_batches_tracked")}
    for key, value in got.items():
        torch.testing.assert_close(value, ref[key], rtol=0, atol=0, msg=key)


@pytest.mark.slow
def test_bottom_up_reproduces_torchvision_features_on_a_real_photo(converted, torchvision_net):
    net = MobileNetV2Backbone(out_features=("res2", "res3", "res4", "res5"))
    state = torch.load(converted, map_location="cpu", weights_only=True)["model"]
    net.load_state_dict({k[len("backbone.bottom_up."):]: v for k, v in state.items()})
    x = _photo(skdata.chelsea())
    with torch.no_grad():
        out = net.eval()(x)
        ref, y = {}, x
        for i, block in enumerate(torchvision_net.features[:18], 1):
            y = ref[i] = block(y)
    for name, end in (("res2", 4), ("res3", 7), ("res4", 14), ("res5", 18)):
        torch.testing.assert_close(out[name], ref[end], rtol=1e-4, atol=1e-4, msg=name)


@pytest.mark.parametrize("photo,label", [("chelsea", EGYPTIAN_CAT), ("coffee", ESPRESSO)])
def test_packaged_weights_are_imagenet_mobilenet_v2(torchvision_net, photo, label):
    with torch.no_grad():
        logits = torchvision_net(_photo(getattr(skdata, photo)()))
    assert logits.argmax(1).item() == label


def test_packaged_file_is_torchvisions_by_its_hash():
    digest = hashlib.sha256()
    with open(default_weights_path(), "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    assert digest.hexdigest().startswith("b0353104")  # torchvision names its files by this prefix
