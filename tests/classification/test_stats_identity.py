"""The identity recorded with the classification trainer's class statistics, pinned: a cached
``class_stats.pt`` is reused only when its identity equals the run's, so any change to this dict
makes every existing cache stale (written against the identity as it stood before issue 31)."""
import os

from adarand.classification.config import load_cfg
from adarand.classification.class_stats import stats_identity
from adarand.classification.trainer import ClassificationTrainer
from adarand.runs.stats_cache import state_dict_digest
from tiny_runs import tiny_opts  # noqa: E402  (tests/classification is on sys.path under pytest)

TRANSFORM = ("Compose(\n"
             "    Resize(size=18, interpolation=bilinear, max_size=None, antialias=True)\n"
             "    CenterCrop(size=(16, 16))\n"
             "    ToTensor()\n"
             "    Normalize(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))\n"
             ")")


def test_classification_statistics_identity_is_unchanged(data_root, tmp_path):
    cfg = load_cfg("", tiny_opts(data_root, tmp_path, **{"MODEL.ADARAND.METHOD": "adarand"}))
    trainer = ClassificationTrainer(cfg, progress=False)
    assert stats_identity(cfg, trainer.model, trainer.data) == {
        "trainer": "classification", "backbone": "tiny_cnn", "weights": "", "checkpoint_format": "torchvision",
        "weights_sha256": state_dict_digest(trainer.model.backbone), "dataset": "imagefolder",
        "root": os.path.abspath(data_root), "split": "train", "fraction": 1.0, "val_fraction": 0.2,
        "split_seed": 0, "num_images": 24, "transform": TRANSFORM}
    # tiny_cnn's random initialisation under SEED 0
    assert state_dict_digest(trainer.model.backbone) == \
        "550055c4a1230c22319ca6ad7b31fe8cd41a4af955a5c3702a90959a5eefbb03"
