"""Image transforms of the classification trainer (torchvision's ImageNet recipe).

train: RandomResizedCrop(size) + RandomHorizontalFlip + ToTensor + Normalize(mean, std);
eval:  Resize(int(size * resize_ratio)) + CenterCrop(size) + ToTensor + Normalize(mean, std).
"""
from collections.abc import Callable, Sequence
from typing import Any

# Input normalisation of the pre-trained weights (RGB in [0, 1]); a model carries its own as
# ``input_mean`` / ``input_std`` (backbones.py), which the trainer uses unless INPUT.MEAN/STD is set.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def build_transforms(train: bool, size: int = 224, mean: Sequence[float] = IMAGENET_MEAN,
                     std: Sequence[float] = IMAGENET_STD, resize_ratio: float = 256 / 224) -> Callable[[Any], Any]:
    """The train or eval pipeline above; ``mean``/``std`` should be the model's ``input_mean``/``input_std``."""
    from torchvision import transforms as T

    if size <= 0 or resize_ratio < 1.0:
        raise ValueError(f"transforms: size = {size} must be > 0 and resize_ratio = {resize_ratio} >= 1")
    if len(mean) != 3 or len(std) != 3:
        raise ValueError(f"transforms: mean {tuple(mean)} and std {tuple(std)} need 3 values (RGB)")
    normalize = [T.ToTensor(), T.Normalize(tuple(mean), tuple(std))]
    if train:
        return T.Compose([T.RandomResizedCrop(size), T.RandomHorizontalFlip(), *normalize])
    return T.Compose([T.Resize(int(size * resize_ratio)), T.CenterCrop(size), *normalize])
