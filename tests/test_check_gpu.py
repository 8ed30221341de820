"""tools/check_gpu.py --smoke: the GPU check's whole path at toy sizes, kernels in Triton's interpreter; the
compiled row of its prior-step timing times the compiled PyTorch path on every call."""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import adarand

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_check_gpu_smoke_runs_every_step_and_writes_its_report(tmp_path):
    out = tmp_path / "gpu.md"
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=os.pathsep.join(
        p for p in (str(ROOT / "plugin"), os.environ.get("PYTHONPATH", "")) if p))
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "check_gpu.py"), "--smoke", "--out", str(out)],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["checks_failed"] == []
    assert set(summary["prior_step_ms"]) == {"triton", "torch", "compiled"}
    assert summary["resnet50_ratio"] is not None and len(summary["resnet50_ratio"]) == 3
    report = out.read_text()
    for row in ("kernel: prior update (gradient + Adam)", "reg.step compiled (fullgraph) == eager",
                "CUDA-graph capture of a training step", "of the peak", "AdaRand / FT", "torch 2."):
        assert row in report, row


def test_compiled_prior_step_runs_with_the_pytorch_backend_on_every_call(monkeypatch):
    """Were the backend unset after the first call, dynamo could recompile the step onto the Triton kernels."""
    spec = importlib.util.spec_from_file_location("check_gpu", ROOT / "tools" / "check_gpu.py")
    check_gpu = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check_gpu)
    backends = []

    def compile_recording_the_backend(fn, **options):
        def call(*args):
            backends.append(adarand.get_backend())
            return fn(*args)
        return call

    monkeypatch.setattr(torch, "compile", compile_recording_the_backend)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    times = check_gpu.time_prior_step(device, (6, 4, 12), rounds=3, smoke=True)
    assert set(times) == {"triton", "torch", "compiled"}
    assert backends and set(backends) == {"torch"}
