"""The default regularizer does not make a small random-init Mask R-CNN diverge where FT trains.

The setting of docs/detection_stability.md, shrunk for speed: a random-init ResNet-18-GN FPN
Mask R-CNN with a 64-d box head, lr 0.005, 40 iterations, seeds 0-2. A mean over the
foreground ROIs only (``NORMALIZER regularized``) diverged there, so the setting is known to
detect the failure.
"""
import pytest
import torch
from tiny import tiny_cfg

from adarand_projects.stability.diagnose import run_diagnosis

pytestmark = pytest.mark.slow

SEEDS = (0, 1, 2)
ITERS = 40


def _diverged(tmp_path, method, seed, **extra):
    cfg = tiny_cfg(tmp_path / f"{method}_{seed}", max_iter=ITERS, **{
        "MODEL.ADARAND.METHOD": method, "SEED": seed, "SOLVER.CHECKPOINT_PERIOD": 100000, **extra})
    cfg.freeze()
    return run_diagnosis(cfg, probe=False)[1]


@pytest.fixture(scope="module")
def ft_divergence(fake_voc, tmp_path_factory):
    out = tmp_path_factory.mktemp("ft")
    return {seed: _diverged(out, "none", seed) for seed in SEEDS}


def test_defaults_do_not_diverge_where_ft_trains(ft_divergence, tmp_path):
    assert all(it is None for it in ft_divergence.values()), ft_divergence  # FT trains on every seed
    defaults = {seed: _diverged(tmp_path, "adarand", seed) for seed in SEEDS}  # adarand, LAMBDA 1
    assert all(it is None for it in defaults.values()), defaults


def test_the_setting_detects_divergence(fake_voc, tmp_path):
    old = {seed: _diverged(tmp_path, "adarand", seed, **{"MODEL.ADARAND.NORMALIZER": "regularized"})
           for seed in SEEDS}
    assert any(it is not None for it in old.values()), old


def test_top_hessian_eigenvalue_matches_a_quadratic():
    """0.5 x^T A x (+ b^T x) has Hessian A: compare with eigvalsh in float64."""
    from adarand_projects.stability.diagnose import top_hessian_eigenvalue

    gen = torch.Generator().manual_seed(0)
    q = torch.linalg.qr(torch.randn(6, 6, generator=gen, dtype=torch.float64))[0]
    a = q @ torch.diag(torch.tensor([9.0, -3.0, 2.0, 1.0, 0.5, 0.1], dtype=torch.float64)) @ q.T
    b = torch.randn(6, generator=gen, dtype=torch.float64)
    x = torch.randn(6, generator=gen, dtype=torch.float64, requires_grad=True)
    eig = top_hessian_eigenvalue(lambda: 0.5 * x @ a @ x + b @ x, [x], iters=60)
    assert eig == pytest.approx(torch.linalg.eigvalsh(a).abs().max().item(), rel=1e-4)


def test_probe_records_each_term_and_the_feature_scale(fake_voc, tmp_path):
    """FNP's loss is lambda * the probe's feature mean square x n_fg / n; RPN/mask terms miss the box head."""
    cfg = tiny_cfg(tmp_path, max_iter=2, **{"MODEL.ADARAND.METHOD": "fnp", "MODEL.ADARAND.LAMBDA": 0.5,
                                            "SOLVER.CHECKPOINT_PERIOD": 100000})
    cfg.freeze()
    rows, diverged = run_diagnosis(cfg)
    assert diverged is None and [r["iter"] for r in rows] == [0, 1]
    for r in rows:
        expected = 0.5 * r["feat_sq"] * r["rois_regularized"] / r["rois_sampled"]
        assert r["loss/loss_adarand"] == pytest.approx(expected, rel=1e-4)
        assert r["grad_head/loss_cls"] > 0 and r["grad_head/loss_adarand"] > 0 and r["grad_feat/loss_adarand"] > 0
        assert r["grad_head/loss_rpn_cls"] == 0 and r["grad_head/loss_mask"] == 0
        assert 0 < r["feat_active"] <= 1
