"""Fixtures of the classification tests: a fake ImageFolder tree shared by a module's runs."""
import os

import pytest

from fake_trees import make_fake_imagefolder
from tiny_runs import NUM_CLASSES, PER_CLASS


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """3 classes x 10 images of 16 px (24 train + 6 val after the 0.2 share; 15 test)."""
    return make_fake_imagefolder(tmp_path_factory.mktemp("data") / "tree", NUM_CLASSES, PER_CLASS, image_size=16)


@pytest.fixture(autouse=True)
def fake_files_pass_md5_checks(monkeypatch):
    """torchvision checks Flowers102's .mat files and CIFAR-10's pickles against the md5 of the real
    downloads; the generated stand-ins (fake_trees.py) pass when present."""
    from torchvision.datasets import cifar, flowers102

    def present(fpath, md5=None):
        return os.path.isfile(fpath)

    monkeypatch.setattr(flowers102, "check_integrity", present)
    monkeypatch.setattr(cifar, "check_integrity", present)
