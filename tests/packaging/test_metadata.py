"""Package metadata and the shipped configs (issue 30, item 1), without building anything."""
import os
import subprocess
import sys
import tomllib

import pytest

import adarand
from adarand import model_zoo

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _toml(path):
    with open(os.path.join(REPO, path), "rb") as f:
        return tomllib.load(f)


def test_one_version():
    """adarand.__version__ is the wheel's version (setuptools reads it) and the research distribution's."""
    assert _toml("pyproject.toml")["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "adarand.__version__"}
    assert _toml("projects/pyproject.toml")["project"]["version"] == adarand.__version__
    with open(os.path.join(REPO, "CHANGELOG.md"), encoding="utf-8") as f:
        assert f"## {adarand.__version__}" in f.read()


def test_the_tested_versions_are_constraints_the_set_up_uses():
    with open(os.path.join(REPO, "constraints.txt"), encoding="utf-8") as f:
        pinned = {line.split("==")[0] for line in f if "==" in line and not line.startswith("#")}
    assert {"torch", "lightning", "transformers", "timm", "open_clip_torch", "opencv-python-headless"} <= pinned
    with open(os.path.join(REPO, "Makefile"), encoding="utf-8") as f:
        makefile = f.read()
    assert '-c constraints.txt -e ".[all]"' in makefile and "-e projects" in makefile


def test_the_library_distribution_leaves_the_research_code_out():
    found = _toml("pyproject.toml")["tool"]["setuptools"]["packages"]["find"]
    assert found["where"] == ["plugin"] and found["include"] == ["adarand*"]


@pytest.mark.slow
def test_citation_file_is_valid_cff():
    proc = subprocess.run([os.path.join(os.path.dirname(sys.executable), "cffconvert"), "--validate", "-i",
                           os.path.join(REPO, "CITATION.cff")], capture_output=True, text=True)
    assert proc.returncode == 0 and "valid" in proc.stdout, proc.stdout + proc.stderr


def test_model_zoo_finds_every_checked_in_config():
    configs = os.path.join(REPO, "configs")
    on_disk = sorted(os.path.relpath(os.path.join(d, n), configs) for d, _, files in os.walk(configs)
                     for n in files if n.endswith((".yaml", ".py")))
    assert model_zoo.list_config_files() == on_disk and len(on_disk) > 100
    assert model_zoo.list_config_files("detection") == [n for n in on_disk if n.startswith("detection/")]
    path = model_zoo.get_config_file("classification/cars_r50_adarand.yaml")
    assert os.path.samefile(path, os.path.join(configs, "classification", "cars_r50_adarand.yaml"))
    assert path.startswith(os.path.dirname(adarand.__file__))


@pytest.mark.parametrize("name", ["classification/no_such.yaml", "../pyproject.toml", "classification"])
def test_model_zoo_names_what_is_not_shipped(name):
    with pytest.raises(FileNotFoundError, match=r"is not a shipped config \(looked in .*configs\)"):
        model_zoo.get_config_file(name)


def test_a_shipped_config_loads_through_the_trainer():
    from adarand.classification.config import load_cfg

    cfg = load_cfg(model_zoo.get_config_file("classification/cars50_r50_adarand.yaml"), [])
    assert cfg.MODEL.ADARAND.METHOD == "adarand"  # through its _BASE_, inside the package
