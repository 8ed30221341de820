import pytest
from fake_voc import make_fake_voc  # tests/detection is on sys.path under pytest (rootdir-relative import mode)

from adarand.detection import register_voc, register_voc_sem_seg


@pytest.fixture(scope="session")
def fake_voc(tmp_path_factory):
    """(root, ground truth) of a generated VOC tree, with every split registered on it."""
    root = tmp_path_factory.mktemp("datasets")
    truth = make_fake_voc(str(root))
    register_voc(str(root))
    register_voc_sem_seg(str(root))
    return str(root), truth
