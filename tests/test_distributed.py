"""Two gloo processes keep bit-identical priors that equal one process fed both batches, and
take PtR's switch-on decision together from the count-weighted CE of all ranks."""
import pytest
import torch

from adarand import ClassStatsAccumulator, build_regularizer
from gloo_ranks import run_on_ranks  # tests/ is on sys.path under pytest

C, D, B, STEPS = 5, 7, 6, 4


def shard_batches(rank):
    """Step s: rank r sees rows [r*B, (r+1)*B) of the global batch (unequal class counts per rank)."""
    out = []
    for step in range(STEPS):
        g = torch.Generator().manual_seed(100 + step)
        features = torch.randn(2 * B, D, generator=g, dtype=torch.float64)
        labels = torch.tensor([0, 0, 0, 1, 2, 2, 4, 1, 1, 1, 1, 2])  # class 3 absent throughout
        out.append((features[rank * B:(rank + 1) * B], labels[rank * B:(rank + 1) * B]) if rank is not None
                   else (features, labels))
    return out


def make_reg():
    reg = build_regularizer("adarand", num_classes=C, feat_dim=D, total_steps=STEPS).double()
    g = torch.Generator().manual_seed(0)
    reg.prior.init_from_stats(torch.randn(C, D, generator=g, dtype=torch.float64), torch.ones(C, D))
    return reg


def shard_stats(batches):
    """Class statistics over 3 classes (labels mod 3), all-reduced when distributed."""
    acc = ClassStatsAccumulator(3)
    for features, labels in batches:
        acc.update(features, labels % 3)
    return acc.finalize()


def adarand_rank(rank):
    reg = make_reg()
    torch.manual_seed(rank)  # each rank draws its own noise
    for features, labels in shard_batches(rank):
        f = features.clone().requires_grad_(True)
        reg(f, labels).backward()
        reg.step(features, labels)
    stats = shard_stats(shard_batches(rank))
    return {"reg": reg.state_dict(), "stats_mean": stats.mean, "stats_count": stats.count}


@pytest.mark.slow
def test_two_gloo_ranks_match_one_process(tmp_path):
    ranks = run_on_ranks(adarand_rank, tmp_path)
    for key in ranks[0]["reg"]:
        assert torch.equal(ranks[0]["reg"][key], ranks[1]["reg"][key]), f"ranks differ in {key}"

    single = make_reg()
    for features, labels in shard_batches(None):
        single.step(features, labels)
    for key, value in single.state_dict().items():
        torch.testing.assert_close(ranks[0]["reg"][key], value, rtol=1e-12, atol=1e-12, msg=key)
    assert not torch.equal(single.prior.mu, make_reg().prior.mu)  # the prior did move

    whole = shard_stats(shard_batches(None))  # counts summed over ranks, never means averaged
    for rank in ranks:
        assert torch.equal(rank["stats_count"], whole.count)
        torch.testing.assert_close(rank["stats_mean"], whole.mean, rtol=1e-6, atol=1e-6)


def ptr_batches(rank):
    """Epoch 1: rank 0 has 2 rows of CE ~ 0.01, rank 1 has 2 rows of CE ~ 5 (global mean ~ 2.5 > T = 1).
    Epoch 2: rank 0 has 6 rows of CE ~ 0.01, rank 1 has 2 rows of CE ~ 2.5: the mean of the rank
    means (~ 1.25) is above T, the count-weighted global mean (~ 0.63) below it."""
    def rows(n, margin, g):
        labels = torch.arange(n) % C
        logits = torch.randn(n, C, generator=g, dtype=torch.float64) * 0.01
        logits[torch.arange(n), labels] += margin
        return labels, logits

    g = torch.Generator().manual_seed(rank)
    epoch1 = rows(2, 6.0, g) if rank == 0 else rows(2, -5.0, g)
    epoch2 = rows(6, 6.0, g) if rank == 0 else rows(2, -2.3, g)
    return [epoch1, epoch2]


def ptr_rank(rank):
    reg = build_regularizer("ptr", num_classes=C, feat_dim=D).double()
    head = torch.randn(C, D, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    decisions, local_ce = [], []
    for labels, logits in ptr_batches(rank):
        features = torch.randn(labels.shape[0], D, dtype=torch.float64)
        reg(features, labels, logits=logits, classifier_weight=head)
        local_ce.append(float(torch.nn.functional.cross_entropy(logits, labels)))
        reg.on_epoch_end()
        decisions.append(bool(reg.enabled))
    fnp = build_regularizer("fnp", num_classes=C, feat_dim=D, check_values=False)
    fnp(torch.randn(2, D), torch.tensor([0, C + 3 if rank == 1 else 1]))  # only rank 1 sees a bad label
    try:
        fnp.check_device_errors()
        raised = ""
    except ValueError as error:
        raised = str(error)
    return {"decisions": decisions, "local_ce": local_ce, "state": reg.state_dict(), "raised": raised}


@pytest.mark.slow
def test_ptr_switch_is_decided_on_the_global_ce_and_survives_resume(tmp_path):
    ranks = run_on_ranks(ptr_rank, tmp_path)
    assert ranks[0]["local_ce"][0] < 1.0 < ranks[1]["local_ce"][0]  # alone, rank 0 would switch on in epoch 1
    assert (ranks[0]["local_ce"][1] + ranks[1]["local_ce"][1]) / 2 > 1.0  # ... and averaging means stays off
    assert ranks[0]["decisions"] == ranks[1]["decisions"] == [False, True]
    resumed = build_regularizer("ptr", num_classes=C, feat_dim=D).double()
    resumed.load_state_dict(ranks[1]["state"])
    assert bool(resumed.enabled)
    assert all(r["raised"].startswith("1 label value(s)") for r in ranks)  # both ranks stop together
