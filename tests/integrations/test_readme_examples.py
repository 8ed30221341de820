"""The README's Python examples run as written, on tiny stand-ins for the names they leave to the reader."""
import os
import re

import torch
from torch import nn
from torch.nn import functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def readme_examples():
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    return re.findall(r"```python\n(.*?)```", text, re.S)


def classifier_names():
    torch.manual_seed(0)
    model = nn.Sequential()
    model.add_module("body", nn.Sequential(nn.Linear(6, 8), nn.ReLU()))
    model.add_module("fc", nn.Linear(8, 3))
    x, y = torch.randn(24, 6), torch.arange(24) % 3
    loader = [(x[i:i + 8], y[i:i + 8]) for i in range(0, 24, 8)]
    return {"model": model, "train_loader": loader, "num_steps": 3, "F": F,
            "optimizer": torch.optim.SGD(model.parameters(), lr=0.1)}


def segmentation_names():
    from torchvision.models.segmentation import deeplabv3_mobilenet_v3_large

    torch.manual_seed(0)
    seg_model = deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=3, aux_loss=False)
    masks = torch.randint(0, 3, (2, 2, 64, 64))
    masks[:, :, :8] = 255  # an ignored band
    loader = [(torch.randn(2, 3, 64, 64), masks[k]) for k in range(2)]
    return {"seg_model": seg_model, "seg_loader": loader, "num_steps": 2, "F": F,
            "optimizer": torch.optim.SGD(seg_model.parameters(), lr=0.01)}


def test_the_readme_attach_examples_run():
    examples = [code for code in readme_examples() if "adarand.attach" in code]
    assert len(examples) == 2
    for code, names in zip(examples, (classifier_names(), segmentation_names())):
        namespace = {"adarand": __import__("adarand"), **names}
        exec(compile(("import adarand\n" if "import adarand" not in code else "") + code, "README.md", "exec"),
             namespace)
        assert int(namespace["reg"].regularizer.prior.optimizer.num_steps) >= 2  # the prior was stepped
