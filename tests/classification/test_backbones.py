"""Backbones: the classifier interface, weight sources, self-supervised key mappings, and a real
ImageNet MobileNetV2 naming real photos."""
import importlib.util
import math
import os
import urllib.error

import pytest
import torch
from torch import nn
from torchvision import models

from adarand.classification.backbones import build_classifier, load_torchvision_model
from adarand.classification.baselines import L2SP
from adarand.classification.transforms import IMAGENET_MEAN, IMAGENET_STD, build_transforms
from adarand.classification.weights import offline_mobilenet_path


def test_tiny_cnn_interface():
    torch.manual_seed(0)
    model = build_classifier("tiny_cnn", 5)
    x = torch.randn(3, 3, 12, 12)
    features = model.features(x)
    assert model.feat_dim == 16 and features.shape == (3, 16)
    assert isinstance(model.head, nn.Linear) and model.head.weight.shape == (5, 16)
    assert torch.equal(model.head.bias, torch.zeros(5))
    f, logits = model.forward_features(x)
    assert torch.allclose(f, features) and torch.allclose(logits, model(x))
    assert torch.allclose(logits, features @ model.head.weight.T + model.head.bias)
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.backbone.modules())
    assert model.input_mean == IMAGENET_MEAN and model.input_std == IMAGENET_STD


def test_head_init_is_normal_001():
    torch.manual_seed(0)
    w = build_classifier("tiny_cnn", 1000).head.weight
    assert abs(w.std().item() - 0.01) < 5e-4 and abs(w.mean().item()) < 5e-4


@pytest.mark.parametrize("name, feat_dim, size", [("resnet18", 512, 32), ("mobilenet_v2", 1280, 32),
                                                   ("vit_b_32", 768, 224)])
def test_torchvision_random_init_shapes(name, feat_dim, size):
    torch.manual_seed(0)
    model = build_classifier(name, 7).eval()
    with torch.no_grad():
        f, logits = model.forward_features(torch.randn(1, 3, size, size))
    assert model.feat_dim == feat_dim and f.shape == (1, feat_dim) and logits.shape == (1, 7)


def _photos():
    from PIL import Image
    from skimage import data
    from sklearn.datasets import load_sample_image

    t = build_transforms(False)
    return torch.stack([t(Image.fromarray(data.chelsea())), t(Image.fromarray(load_sample_image("china.jpg")))])


def test_offline_imagenet_mobilenet_names_real_photos():
    """skimage's cat -> 285 "Egyptian cat", sklearn's china.jpg -> 698 "palace" (ImageNet-1k indices)."""
    from torchvision.models import MobileNet_V2_Weights

    categories = MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"]
    assert categories[285] == "Egyptian cat" and categories[698] == "palace"
    imagenet = load_torchvision_model("mobilenet_v2", "imagenet-offline").eval()
    x = _photos()
    with torch.no_grad():
        logits = imagenet(x)
    top5 = logits.topk(5).indices
    assert 285 in top5[0] and 698 in top5[1]
    assert top5[:, 0].tolist() == [285, 698]
    # the classifier's backbone is the same network up to the ImageNet head
    model = build_classifier("mobilenet_v2", 3, weights="imagenet-offline").eval()
    with torch.no_grad():
        features = model.features(x)
    assert torch.allclose(imagenet.classifier[1](features), logits, atol=1e-4)
    state = torch.load(offline_mobilenet_path(), weights_only=True)
    start = L2SP(model).starting_point()  # L2-SP's w^0 are the pre-trained weights
    assert torch.equal(start["backbone.features.0.0.weight"], state["features.0.0.weight"])
    assert model.input_mean == IMAGENET_MEAN


def test_imagenet_offline_only_for_mobilenet():
    with pytest.raises(ValueError, match="mobilenet_v2"):
        build_classifier("resnet18", 3, weights="imagenet-offline")


def _params_equal(model, state, prefix="backbone."):
    named = dict(model.named_parameters())
    return all(torch.equal(named[prefix + k], v) for k, v in state.items() if prefix + k in named)


def test_local_torchvision_file_and_hub_cache(tmp_path, monkeypatch):
    torch.manual_seed(1)
    reference = models.resnet18().state_dict()
    path = tmp_path / "r18.pth"
    torch.save({"model": reference}, path)  # torchvision references' checkpoint layout
    model = build_classifier("resnet18", 4, weights=str(path))
    assert _params_equal(model, reference) and "backbone.fc.weight" not in dict(model.named_parameters())
    # an enum name is read from the torch hub cache when the file is there
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    url = models.ResNet18_Weights.IMAGENET1K_V1.url
    os.makedirs(tmp_path / "hub" / "checkpoints")
    torch.save(reference, tmp_path / "hub" / "checkpoints" / os.path.basename(url))
    assert _params_equal(build_classifier("resnet18", 4, weights="IMAGENET1K_V1"), reference)


def test_enum_weights_offline_ask_for_a_local_path(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "empty-hub"))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(FileNotFoundError, match="local path"):
        build_classifier("resnet50", 3, weights="IMAGENET1K_V2")
    with pytest.raises(ValueError, match="IMAGENET1K_V1"):
        build_classifier("resnet18", 3, weights="IMAGENET9K_V9")


def _ssl_layouts(trunk):
    """Checkpoint layouts of public SimCLR / Barlow Twins code, built from a trunk state dict."""
    projector = {"0.weight": torch.randn(8, 512), "2.weight": torch.randn(4, 8)}
    return {
        # SimCLR converted to torchvision keys (the ImageNet fc kept), wrapped in "state_dict"
        "simclr-converted": {"state_dict": {**trunk, "fc.weight": torch.randn(1000, 512),
                                            "fc.bias": torch.randn(1000)}},
        # SimCLR code holding a torchvision ResNet as `backbone` whose fc is the projection MLP
        "simclr-backbone": {**{f"backbone.{k}": v for k, v in trunk.items()},
                            **{f"backbone.fc.{k}": v for k, v in projector.items()}},
        # DDP-wrapped query encoder
        "simclr-ddp": {**{f"module.encoder_q.{k}": v for k, v in trunk.items()},
                       **{f"module.encoder_q.fc.{k}": v for k, v in projector.items()}},
        # Barlow Twins' training checkpoint: module.backbone / module.projector / module.bn
        "barlowtwins-checkpoint": {"epoch": 5, "model": {
            **{f"module.backbone.{k}": v for k, v in trunk.items()},
            **{f"module.projector.{k}": v for k, v in projector.items()},
            "module.bn.running_mean": torch.zeros(4)}},
    }


@pytest.mark.parametrize("layout", ["simclr-converted", "simclr-backbone", "simclr-ddp", "barlowtwins-checkpoint"])
def test_ssl_checkpoints_load_the_trunk(tmp_path, layout):
    torch.manual_seed(2)
    source = models.resnet18()
    source.fc = nn.Identity()
    trunk = source.state_dict()
    path = tmp_path / f"{layout}.pth"
    torch.save(_ssl_layouts(trunk)[layout], path)
    fmt = layout.split("-")[0]
    model = build_classifier("resnet18", 3, weights=str(path), checkpoint_format=fmt)
    assert _params_equal(model, trunk)
    buffers = dict(model.named_buffers())
    assert torch.equal(buffers["backbone.bn1.running_var"], trunk["bn1.running_var"])


def test_official_barlow_twins_resnet50_file(tmp_path):
    """Barlow Twins' released resnet50.pth: plain torchvision keys, no fc."""
    torch.manual_seed(3)
    state = {k: v for k, v in models.resnet50().state_dict().items() if not k.startswith("fc.")}
    path = tmp_path / "resnet50.pth"
    torch.save(state, path)
    model = build_classifier("resnet50", 3, weights=str(path), checkpoint_format="barlowtwins")
    assert model.feat_dim == 2048 and _params_equal(model, state)


def test_ssl_checkpoint_with_missing_keys_is_an_error(tmp_path):
    trunk = models.resnet18().state_dict()
    del trunk["layer4.1.conv2.weight"], trunk["layer4.1.bn2.weight"]
    trunk["extra.weight"] = torch.zeros(1)
    path = tmp_path / "broken.pth"
    torch.save(trunk, path)
    with pytest.raises(KeyError) as info:
        build_classifier("resnet18", 3, weights=str(path), checkpoint_format="simclr")
    message = str(info.value)
    assert "layer4.1.conv2.weight" in message and "layer4.1.bn2.weight" in message and "extra.weight" in message


def test_bad_names_and_formats(tmp_path):
    with pytest.raises(ValueError, match="unknown backbone"):
        build_classifier("resnet51", 3)
    with pytest.raises(ValueError, match="checkpoint_format"):
        build_classifier("resnet18", 3, checkpoint_format="moco")
    with pytest.raises(ValueError, match="ResNets"):
        build_classifier("vit_b_16", 3, weights="x.pth", checkpoint_format="simclr")
    with pytest.raises(FileNotFoundError, match="local weights file"):
        build_classifier("resnet50", 3, weights="", checkpoint_format="barlowtwins")
    not_weights = tmp_path / "notes.pth"
    not_weights.write_text("hello")
    with pytest.raises(ValueError, match="cannot read weights file"):
        build_classifier("resnet18", 3, weights=str(not_weights))


@pytest.mark.parametrize("name, package", [("timm:resnet18", "timm"), ("clip:RN50", "open_clip")])
def test_optional_libraries(name, package):
    if importlib.util.find_spec(package) is None:
        with pytest.raises(ImportError, match="pip install"):
            build_classifier(name, 3)
    else:
        model = build_classifier(name, 3).eval()
        with torch.no_grad():
            f, logits = model.forward_features(torch.randn(1, 3, 224, 224))
        assert f.shape == (1, model.feat_dim) and logits.shape == (1, 3)


def _mlp_activations(tower):
    """The activation modules inside the residual blocks' MLPs of an open_clip transformer tower."""
    return [block.mlp.gelu for block in tower.transformer.resblocks]


def _quick_gelu_ref(x):
    """OpenAI CLIP's activation, x * sigmoid(1.702 x), in float64."""
    x = x.double()
    return x * torch.sigmoid(1.702 * x)


@pytest.mark.parametrize("arch", ["ViT-B-32", "ViT-B-16"])
@pytest.mark.slow
def test_clip_vits_are_openais_quickgelu_network_from_a_local_file_or_a_tag(arch, tmp_path, monkeypatch):
    import open_clip  # setup.py's cls extra

    x = torch.linspace(-4, 4, 81)
    torch.manual_seed(0)
    model = build_classifier(f"clip:{arch}", 3)
    for act in _mlp_activations(model.backbone):
        assert torch.allclose(act(x).double(), _quick_gelu_ref(x), atol=1e-6)
    # OpenAI's weights from a local file: still the QuickGELU tower, and the same function as before.
    path = tmp_path / "clip.pth"
    torch.save({f"visual.{k}": v for k, v in model.backbone.state_dict().items()}, path)
    loaded = build_classifier(f"clip:{arch}", 3, weights=str(path)).eval()
    for act in _mlp_activations(loaded.backbone):
        assert torch.allclose(act(x).double(), _quick_gelu_ref(x), atol=1e-6)
    image = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(loaded.features(image), model.eval().features(image), atol=1e-5)
    # From a tag: the tower open_clip is asked for is the -quickgelu config (no download here).
    asked = []

    def create_model(config, pretrained=None):
        asked.append((config, pretrained))
        return open_clip.factory.create_model(config, pretrained=None)

    monkeypatch.setattr(open_clip, "create_model", create_model)
    build_classifier(f"clip:{arch}", 3, weights="openai")
    assert asked == [(f"{arch}-quickgelu", "openai")]


def test_clip_gelu_tower_by_name_and_mismatched_tags_are_errors():
    x = torch.linspace(-4, 4, 81)
    model = build_classifier("clip:ViT-B-32-gelu", 3)
    for act in _mlp_activations(model.backbone):
        assert torch.allclose(act(x).double(), torch.nn.functional.gelu(x.double()), atol=1e-6)
    with pytest.raises(ValueError, match="use clip:ViT-B-32$"):
        build_classifier("clip:ViT-B-32-gelu", 3, weights="openai")  # OpenAI's weights need QuickGELU
    with pytest.raises(ValueError, match="use clip:ViT-B-16-gelu"):
        build_classifier("clip:ViT-B-16", 3, weights="laion2b_s34b_b88k")  # LAION's ViT-B/16 has GELU


@pytest.mark.slow
def test_head_init_of_clip_vit_is_nn_linears_default_and_of_clip_rn50_normal_001():
    """The official model/clip.py: the ViTs' new head keeps nn.Linear's init, RN50's is N(0, 0.01^2), bias 0."""
    torch.manual_seed(0)
    head = build_classifier("clip:ViT-B-32", 1000).head
    bound = 1 / math.sqrt(head.in_features)  # kaiming_uniform(a=sqrt 5) and the bias: U(-1/sqrt(fan_in), ...)
    assert head.weight.abs().max() <= bound and head.bias.abs().max() <= bound
    assert abs(head.weight.std().item() - bound / math.sqrt(3)) < 1e-3 and head.bias.abs().sum() > 0
    head = build_classifier("clip:RN50", 1000).head
    assert abs(head.weight.std().item() - 0.01) < 5e-4 and not head.bias.any()
