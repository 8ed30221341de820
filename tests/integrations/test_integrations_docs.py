"""Every ```python example of docs/integrations.md runs as the script it is (``__main__``, in a fresh
folder; in this process, to spare each one the imports), so the page cannot rot; the Lightning example
also runs on two CPU processes (DDP over gloo) and ends with the same prior on both."""
import os
import re
import runpy
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "integrations.md"


def examples():
    """``{section title: code}`` of the page's ```python blocks (one per section)."""
    out, section = {}, None
    for block in re.split(r"^## ", PAGE.read_text(), flags=re.M)[1:]:
        section = block.splitlines()[0].strip()
        codes = re.findall(r"^```python\n(.*?)^```", block, flags=re.M | re.S)
        assert len(codes) <= 1, f"section {section!r} has {len(codes)} examples; keep one per section"
        if codes:
            out[section] = codes[0]
    return out


EXAMPLES = examples()


def run(script, cwd, timeout=240):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "plugin"), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    env.pop("LOCAL_RANK", None)
    done = subprocess.run([sys.executable, str(script)], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, f"{script.name} failed:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    return done.stdout


def test_the_page_has_an_example_per_framework():
    assert set(EXAMPLES) == {"A plain PyTorch loop (any model)", "PyTorch Lightning", "Hugging Face Transformers",
                             "timm"}


@pytest.mark.parametrize("section", sorted(EXAMPLES))
def test_example_runs(section, tmp_path, monkeypatch, capsys):
    script = tmp_path / "example.py"
    script.write_text(EXAMPLES[section])
    monkeypatch.chdir(tmp_path)
    runpy.run_path(str(script), run_name="__main__")
    assert capsys.readouterr().out.strip(), f"the {section} example printed nothing"


@pytest.mark.slow
def test_lightning_example_on_two_ddp_processes_keeps_one_prior(tmp_path):
    """Lightning's DDP launcher starts rank 1 by re-running this wrapper, which runs the example's main(devices=2)."""
    (tmp_path / "lightning_example.py").write_text(EXAMPLES["PyTorch Lightning"])
    wrapper = tmp_path / "ddp.py"
    wrapper.write_text(textwrap.dedent("""
        import torch
        from lightning_example import main

        trainer, module = main(devices=2)
        state = module.adarand.state_dict()
        torch.save(state, f"rank{trainer.global_rank}.pt")
    """))
    run(wrapper, tmp_path, timeout=300)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert set(ranks[0]) == set(ranks[1])
    for key, value in ranks[0].items():
        if key != "noise_state":  # the regularizer's noise stream is per rank by design
            assert torch.equal(value, ranks[1][key]), f"the ranks' priors differ in {key}"
    # 32 images, 2 ranks x batches of 8, 2 epochs: 4 optimizer steps, each moving the prior (nonzero moments)
    assert int(ranks[0]["regularizer.prior.optimizer.num_steps"]) == 4
    assert ranks[0]["regularizer.prior.optimizer.exp_avg_sq"].min() > 0
