import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from fake_voc import make_fake_voc  # noqa: E402

from adarand.detection import register_voc  # noqa: E402


@pytest.fixture(scope="session")
def fake_voc(tmp_path_factory):
    """(root, ground truth) of a generated VOC tree, with every split registered on it."""
    root = tmp_path_factory.mktemp("datasets")
    truth = make_fake_voc(str(root))
    register_voc(str(root))
    return str(root), truth
