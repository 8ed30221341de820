"""The distribution a user installs (issue 30, item 1): the wheel and sdist build from a clean copy of the
checkout, pass ``twine check``, carry ``py.typed``, the README, the licence and the configs, pin nothing,
and, installed into a fresh virtual environment with no checkout on its path, import and train.

Offline: ``python -m build --no-isolation`` uses the setuptools of this environment, and the fresh
environment sees this one's packages (torch ...) through a path file, not through the checkout."""
import email
import glob
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile

import pytest
from packaging.requirements import Requirement

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SMOKE = textwrap.dedent("""
    import os, sys
    import torch
    from torch import nn
    import adarand
    from adarand import model_zoo

    checkout = sys.argv[1]
    assert adarand.__file__.startswith(sys.prefix), adarand.__file__  # the fresh environment's copy
    assert not {checkout, os.path.join(checkout, "plugin"), os.path.join(checkout, "projects")} & {
        os.path.abspath(p or os.getcwd()) for p in sys.path}, sys.path

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    x, y = torch.randn(24, 8), torch.arange(24) % 3
    loader = [(x[i:i + 8], y[i:i + 8]) for i in range(0, 24, 8)]
    reg = adarand.attach(model, "2", total_steps=6)
    reg.init_from_data(loader)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    mu = reg.regularizer.prior.mu.detach().clone()
    for images, labels in loader * 2:
        loss = nn.functional.cross_entropy(model(images), labels) + reg.loss(labels)
        opt.zero_grad(); loss.backward(); opt.step()
        reg.step()
    assert torch.isfinite(loss) and not torch.equal(reg.regularizer.prior.mu, mu)

    cfg = model_zoo.get_config_file("classification/cars_r50_adarand.yaml")
    assert cfg.startswith(os.path.dirname(adarand.__file__)) and os.path.isfile(cfg), cfg
    print("smoke ok", adarand.__version__)
""")


def _run(cmd, **kwargs):
    proc = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def _clean_copy(dest):
    """The checkout's files as a clone holds them (tracked and not ignored; links kept as links)."""
    files = _run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO).stdout
    for rel in filter(None, files.split("\0")):
        src = os.path.join(REPO, rel)
        if not os.path.lexists(src):  # deleted in the working tree, not yet committed
            continue
        os.makedirs(os.path.dirname(os.path.join(dest, rel)), exist_ok=True)
        if os.path.islink(src):
            os.symlink(os.readlink(src), os.path.join(dest, rel))
        else:
            shutil.copy2(src, os.path.join(dest, rel))


@pytest.fixture(scope="module")
def dists(tmp_path_factory):
    """sdist and wheel (built from the sdist, as pip does) of a clean copy of the checkout."""
    root = tmp_path_factory.mktemp("dist")
    src, out = root / "src", root / "out"
    _clean_copy(src)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    _run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(src)], env=env)
    (wheel,), (sdist,) = glob.glob(str(out / "*.whl")), glob.glob(str(out / "*.tar.gz"))
    return wheel, sdist


def _metadata(wheel):
    with zipfile.ZipFile(wheel) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        return email.message_from_string(zf.read(name).decode()), zf.namelist()


@pytest.mark.slow
def test_twine_check_passes(dists):
    _run([sys.executable, "-m", "twine", "check", "--strict", *dists])


@pytest.mark.slow
def test_wheel_carries_types_readme_licence_configs_and_no_pins(dists):
    import adarand

    meta, names = _metadata(dists[0])
    assert meta["Version"] == adarand.__version__
    assert "adarand/py.typed" in names
    assert meta["Description-Content-Type"] == "text/markdown"
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        assert meta.get_payload().strip() == f.read().strip()
    assert meta["License-Expression"] == "MIT" and "LICENSE" in meta.get_all("License-File")
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    requires = meta.get_all("Requires-Dist")
    assert any(r.startswith("torch>=") for r in requires)
    pinned = [r for r in requires if any(s.operator in ("==", "===") for s in Requirement(r).specifier)]
    assert not pinned, f"exact pins belong in constraints.txt, not in the package's metadata: {pinned}"
    assert {"adarand/configs/classification/cars_r50_adarand.yaml",
            "adarand/configs/detection/mask_rcnn_R_50_FPN_voc2012_single_adarand.yaml",
            "adarand/configs/detection/mask_rcnn_R_50_FPN_voc2012_single_adarand.py"} <= set(names)
    assert not [n for n in names if n.startswith("adarand_projects")], "the research code is its own distribution"


@pytest.mark.slow
def test_wheel_installed_in_a_fresh_environment_trains_without_the_checkout(dists, tmp_path):
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = str(venv / "bin" / "python")
    site = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    # this environment's packages (torch, ...) as plain paths: their .pth files (the checkout's editable
    # install of adarand) are not processed there; nothing of the checkout but its .venv
    deps = [p for p in sys.path if p and os.path.isdir(p) and (
        not os.path.abspath(p).startswith(REPO + os.sep) or os.path.abspath(p).startswith(
            os.path.join(REPO, ".venv") + os.sep)) and os.path.abspath(p) != REPO]
    with open(os.path.join(site, "deps.pth"), "w") as f:
        f.write("\n".join(deps) + "\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    _run([sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", "--no-index", dists[0]],
         env=env)
    work = tmp_path / "work"
    work.mkdir()
    (work / "smoke.py").write_text(SMOKE)
    out = _run([python, "-I", "smoke.py", REPO], cwd=work, env=env).stdout
    assert f"smoke ok {_version()}" in out
    for module in ("adarand.classification.train", "adarand.detection.train_net"):
        assert "--config-file" in _run([python, "-I", "-m", module, "--help"], cwd=work, env=env).stdout
    assert "--config-file" in _run([str(venv / "bin" / "adarand-train-cls"), "--help"], cwd=work, env=env).stdout


def _version():
    import adarand
    return adarand.__version__
