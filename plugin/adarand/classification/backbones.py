"""Backbones with a new linear head: ``build_classifier(name, num_classes, weights, checkpoint_format)``.

The model is ``logits = head(backbone(x))``: ``backbone`` maps an image batch to the B x D
penultimate vector (after global pooling), ``head = nn.Linear(D, num_classes)`` is new:
weight ~ N(0, 0.01^2), bias 0, except on CLIP's ViTs, whose head keeps ``nn.Linear``'s own
initialisation as in the official code (``HEAD_INIT``). Weight sources, input statistics and the
key mappings of self-supervised checkpoints are listed in ``docs/classification_data.md``; reading and
checking the weights: :mod:`adarand.classification.weights`.
"""
import os
from collections.abc import Sequence

import torch
from torch import nn

from adarand.registry import Registry

from .transforms import CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD
from .weights import clip_visual_state, load_ssl, load_strictly, offline_mobilenet_path, read_checkpoint, \
    torchvision_weights


TORCHVISION = ("resnet18", "resnet50", "vit_b_32", "vit_b_16", "mobilenet_v2")
# Our CLIP names -> open_clip's model config. OpenAI's CLIP (the weights the paper fine-tunes) uses
# QuickGELU, x * sigmoid(1.702 x), in its transformers: the plain names are OpenAI's network whatever
# the weights (a local file or a tag). The "-gelu" names are open_clip's plain-GELU towers, for
# weights trained with GELU (e.g. LAION's). RN50's image tower has no GELU: both configs are equal there.
CLIP_CONFIGS = {"RN50": "RN50-quickgelu", "ViT-B-32": "ViT-B-32-quickgelu", "ViT-B-16": "ViT-B-16-quickgelu",
                "ViT-B-32-gelu": "ViT-B-32", "ViT-B-16-gelu": "ViT-B-16"}
CLIP = tuple(CLIP_CONFIGS)
# The new head's initialisation: "normal" N(0, 0.01^2) weight and zero bias (official model/resnet.py,
# model/vit.py, the CLIP RN50 of model/clip.py), "default" nn.Linear's own (the official CLIP ViTs).
HEAD_INIT = ("normal", "default")
CHECKPOINT_FORMATS = ("torchvision", "simclr", "barlowtwins")


class ImageClassifier(nn.Module):
    """``head(backbone(x))`` plus what the trainer needs to know (no copy of the starting weights: L2-SP keeps its own)."""

    def __init__(self, backbone: nn.Module, feat_dim: int, num_classes: int,
                 input_mean: Sequence[float] = IMAGENET_MEAN, input_std: Sequence[float] = IMAGENET_STD,
                 head_init: str = "normal"):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes = {num_classes}; expected >= 1")
        if head_init not in HEAD_INIT:
            raise ValueError(f"head_init {head_init!r}; expected one of {HEAD_INIT}")
        self.backbone, self.feat_dim = backbone, int(feat_dim)
        self.head = nn.Linear(self.feat_dim, num_classes)  # "default": nn.Linear's own initialisation
        if head_init == "normal":
            nn.init.normal_(self.head.weight, std=0.01)
            nn.init.zeros_(self.head.bias)
        self.input_mean, self.input_std = tuple(input_mean), tuple(input_std)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features, B x feat_dim."""
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(features, logits)`` from one backbone pass."""
        f = self.backbone(x)
        return f, self.head(f)


class TinyCNN(nn.Sequential):
    """Two conv + BN + ReLU blocks and global average pooling: 16 features, for fast tests."""

    def __init__(self, width: int = 16):
        super().__init__(
            nn.Conv2d(3, width // 2, 3, padding=1, bias=False), nn.BatchNorm2d(width // 2), nn.ReLU(inplace=True),
            nn.Conv2d(width // 2, width, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(width),
            nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten(1))


def load_torchvision_model(arch: str, weights: str = "") -> nn.Module:
    """torchvision's ``arch`` with its own ImageNet classifier, ``weights`` loaded strictly.

    ``weights``: "" (random init), a torchvision enum name ("IMAGENET1K_V2"), a local file of
    torchvision keys, or "imagenet-offline" (mobilenet_v2 only)."""
    from torchvision import models

    if arch not in TORCHVISION:
        raise ValueError(f"unknown torchvision backbone {arch!r}; expected one of {TORCHVISION}")
    if weights == "imagenet-offline":
        if arch != "mobilenet_v2":
            raise ValueError(f"weights 'imagenet-offline' exist only for mobilenet_v2, not {arch}")
        state = read_checkpoint(offline_mobilenet_path())
    elif weights and os.path.isfile(weights):
        state = read_checkpoint(weights)
    elif weights:
        state = torchvision_weights(arch, weights)
    model = getattr(models, arch)()
    if weights:
        load_strictly(model, state, weights, arch)
    return model


def _torchvision_backbone(arch, weights, checkpoint_format):
    """(trunk, feat_dim): the torchvision model with its classifier replaced by Identity."""
    if checkpoint_format == "torchvision":
        model = load_torchvision_model(arch, weights)
    else:
        if not arch.startswith("resnet"):
            raise ValueError(f"checkpoint_format {checkpoint_format!r} is for ResNets, not {arch}")
        if not (weights and os.path.isfile(weights)):
            raise FileNotFoundError(f"checkpoint_format {checkpoint_format!r} needs a local weights file; "
                                    f"got {weights!r}")
        model = load_torchvision_model(arch)
    if arch.startswith("resnet"):
        feat_dim, model.fc = model.fc.in_features, nn.Identity()
    elif arch.startswith("vit"):
        feat_dim, model.heads = model.hidden_dim, nn.Identity()
    else:  # mobilenet_v2: classifier = Dropout + Linear
        feat_dim, model.classifier = model.last_channel, nn.Identity()
    if checkpoint_format != "torchvision":
        load_ssl(model, weights, checkpoint_format)
    return model, feat_dim


def _timm_backbone(arch, weights):
    """timm's ``arch`` without classifier (num_classes=0 returns pooled features).

    ``weights``: "" random, "pretrained" timm's own weights, or a local file (timm drops its classifier)."""
    try:
        import timm
    except ImportError:
        raise ImportError(f"backbone 'timm:{arch}' needs timm: pip install timm") from None
    kwargs = {}
    if weights and weights != "pretrained":
        if not os.path.isfile(weights):
            raise FileNotFoundError(f"timm weights file {weights!r} not found")
        kwargs["pretrained_cfg_overlay"] = {"file": weights}
    model = timm.create_model(arch, pretrained=bool(weights), num_classes=0, **kwargs)
    cfg = model.pretrained_cfg
    return model, model.num_features, cfg.get("mean", IMAGENET_MEAN), cfg.get("std", IMAGENET_STD)


def _clip_backbone(arch, weights):
    """open_clip's image tower (its output is the projected image embedding), built from the config
    ``CLIP_CONFIGS[arch]``: OpenAI's QuickGELU network for RN50 / ViT-B-32 / ViT-B-16.

    ``weights``: "" random, a local state-dict file (read with ``weights_only=True`` and loaded
    strictly into the tower), or an open_clip pretrained tag ("openai"; open_clip fetches it). A tag
    trained with the other activation than the tower's is an error (open_clip would only warn)."""
    if arch not in CLIP:
        raise ValueError(f"unknown CLIP backbone {arch!r}; expected one of {CLIP}")
    try:
        import open_clip
    except ImportError:
        raise ImportError(f"backbone 'clip:{arch}' needs open_clip: pip install open_clip_torch") from None
    config = CLIP_CONFIGS[arch]
    local = bool(weights) and os.path.isfile(weights)
    if weights and not local:
        _check_clip_tag(open_clip, arch, config, weights)
    model = open_clip.create_model(config, pretrained=None if local or not weights else weights)
    visual = model.visual
    if local:
        load_strictly(visual, clip_visual_state(read_checkpoint(weights)), weights, f"clip:{arch}")
    mean = getattr(visual, "image_mean", None) or CLIP_MEAN
    std = getattr(visual, "image_std", None) or CLIP_STD
    return visual, visual.output_dim, mean, std


def _check_clip_tag(open_clip, arch, config, tag):
    """ValueError when open_clip's pretrained tag was trained with QuickGELU and the tower has GELU, or
    the reverse: loading it would succeed (same shapes) and silently compute another function."""
    base = config.replace("-quickgelu", "")
    tag_cfg = open_clip.get_pretrained_cfg(config, tag) or open_clip.get_pretrained_cfg(base, tag)
    quick = config != base
    if tag_cfg and bool(tag_cfg.get("quick_gelu")) != quick:
        other = [f"clip:{name}" for name, cfg in CLIP_CONFIGS.items()
                 if cfg != config and cfg.replace("-quickgelu", "") == base]
        raise ValueError(f"CLIP weights {tag!r} were trained with {'GELU' if quick else 'QuickGELU'}, but "
                         f"clip:{arch} has {'QuickGELU' if quick else 'GELU'}; use "
                         f"{other[0] if other else 'a backbone with that activation'}")


def build_classifier(name: str, num_classes: int, weights: str = "",
                     checkpoint_format: str = "torchvision") -> ImageClassifier:
    """An ``ImageClassifier`` with backbone ``name`` and a new ``num_classes``-way head.

    names: resnet18, resnet50, vit_b_32, vit_b_16, mobilenet_v2 (torchvision), tiny_cnn,
    timm:<model>, clip:RN50 | clip:ViT-B-32 | clip:ViT-B-16 (OpenAI's networks, QuickGELU) |
    clip:ViT-B-32-gelu | clip:ViT-B-16-gelu (plain GELU). The head is N(0, 0.01^2) with zero bias,
    except on the CLIP ViTs: nn.Linear's own initialisation, as the official code."""
    if checkpoint_format not in CHECKPOINT_FORMATS:
        raise ValueError(f"checkpoint_format {checkpoint_format!r}; expected one of {CHECKPOINT_FORMATS}")
    if checkpoint_format != "torchvision" and not name.startswith("resnet"):
        raise ValueError(f"checkpoint_format {checkpoint_format!r} is for ResNets, not {name}")
    family, arch = _family(name)
    if family is None:
        raise ValueError(f"unknown backbone {name!r}; expected tiny_cnn, one of {TORCHVISION}, "
                         f"timm:<model> or clip:<{'|'.join(CLIP)}>")
    backbone, feat_dim, mean, std, head_init = BACKBONES.get(family)(arch, weights, checkpoint_format)
    return ImageClassifier(backbone, feat_dim, num_classes, mean, std, head_init)


def _family(name):
    """``(family, arch)`` of a backbone name: ``timm:<model>`` / ``clip:<arch>`` by prefix, a torchvision
    name, ``tiny_cnn``; ``(None, name)`` for anything else."""
    prefix, colon, arch = name.partition(":")
    if colon:
        return (prefix, arch) if prefix in ("timm", "clip") else (None, name)
    if name in TORCHVISION:
        return "torchvision", name
    return (name, name) if name == "tiny_cnn" else (None, name)


# Each family: (arch, weights, checkpoint_format) -> (backbone, feat_dim, input mean, input std, head init).
def _tiny_cnn(arch, weights, checkpoint_format):
    if weights:
        raise ValueError("tiny_cnn has no pre-trained weights; use weights=''")
    return TinyCNN(), 16, IMAGENET_MEAN, IMAGENET_STD, "normal"


def _torchvision_family(arch, weights, checkpoint_format):
    return (*_torchvision_backbone(arch, weights, checkpoint_format), IMAGENET_MEAN, IMAGENET_STD, "normal")


def _timm_family(arch, weights, checkpoint_format):
    return (*_timm_backbone(arch, weights), "normal")


def _clip_family(arch, weights, checkpoint_format):
    """The CLIP ViTs keep nn.Linear's own head initialisation, as the official code."""
    return (*_clip_backbone(arch, weights), "default" if arch.startswith("ViT") else "normal")


BACKBONES = Registry("backbone family", {"tiny_cnn": _tiny_cnn, "torchvision": _torchvision_family,
                                         "timm": _timm_family, "clip": _clip_family})
