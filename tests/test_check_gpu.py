"""tools/check_gpu.py --smoke: the GPU check's whole path at toy sizes, kernels in Triton's interpreter."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


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
