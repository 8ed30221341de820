"""The backbone layers DELTA compares: which ones (:func:`delta_layers`), found by name
(:func:`resolve_layers`) and read with forward hooks that live for one block (:func:`capture_outputs`)."""
import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from torch import nn


@contextlib.contextmanager
def capture_outputs(modules: Mapping[str, nn.Module]) -> Iterator[dict[str, Any]]:
    """Forward hooks on ``{name: module}`` for the duration of the block; outputs land in the yielded dict."""
    outputs: dict[str, Any] = {}

    def hook(name):
        def record(module, inputs, output):
            outputs[name] = output
        return record

    handles = [module.register_forward_hook(hook(name)) for name, module in modules.items()]
    try:
        yield outputs
    finally:
        for handle in handles:
            handle.remove()


def resolve_layers(backbone: nn.Module, layers: Sequence[str]) -> dict[str, nn.Module]:
    """``{name: submodule}`` of ``backbone`` ("" is the backbone itself: the penultimate features)."""
    modules = dict(backbone.named_modules())
    missing = [name for name in layers if name not in modules]
    if missing:
        raise KeyError(f"delta: backbone has no submodule(s) {missing} (BASELINE.DELTA_LAYERS)")
    return {name: modules[name] for name in layers}


def delta_layers(backbone: nn.Module) -> list[str]:
    """DELTA's layers for ``backbone``: the output of the last convolution of the last block of each
    ResNet stage, before its BatchNorm (``layer1.2.conv3`` ... ``layer4.2.conv3`` on a ResNet-50, as
    DELTA's code hooks them; ``conv2`` of basic blocks); the penultimate features ``[""]`` for other
    backbones (DELTA defines no layers for them: name them in BASELINE.DELTA_LAYERS)."""
    layers = []
    for k in range(1, 5):
        stage = getattr(backbone, f"layer{k}", None)
        if not isinstance(stage, nn.Sequential) or not len(stage):
            return [""]
        last = len(stage) - 1
        conv = "conv3" if hasattr(stage[last], "conv3") else "conv2"
        if not isinstance(getattr(stage[last], conv, None), nn.Conv2d):
            return [""]
        layers.append(f"layer{k}.{last}.{conv}")
    return layers
