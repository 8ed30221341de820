"""Random streams of a classification run: the epoch order never repeats another (seed, epoch)'s, and
runs of one SEED see the same images with the same augmentation whatever the method."""
import itertools

import pytest
import torch

from adarand.classification import build, cli
from adarand.classification.config import load_cfg
from adarand.classification.trainer import ClassificationTrainer
from adarand.seeding import NOISE, stream_seed

from tiny_runs import tiny_opts  # noqa: E402  (tests/classification is on sys.path under pytest)


class Items(torch.utils.data.Dataset):
    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return torch.zeros(1), i


def epoch_order(seed, epoch, n=40, rank=0, world=1):
    cfg = load_cfg("", ["SEED", str(seed), "SOLVER.BATCH_SIZE", "4", "DATALOADER.NUM_WORKERS", "0",
                         "DATALOADER.DROP_LAST", "False"])
    loader = build.train_loader(cfg, Items(n), rank, world, torch.Generator())
    loader.sampler.set_epoch(epoch)
    return tuple(int(i) for _, labels in loader for i in labels)


def test_no_seed_and_epoch_repeat_the_order_of_another():
    """DistributedSampler seeds with seed + epoch: (k, e) and (k + 1, e - 1) shared an order."""
    orders = {(seed, epoch): epoch_order(seed, epoch) for seed in range(20) for epoch in range(30)}
    assert len(set(orders.values())) == len(orders)
    assert epoch_order(3, 5) == orders[(3, 5)]  # a function of (seed, epoch) only: a resume continues it


@pytest.mark.parametrize("n,world", [(40, 2), (41, 2), (9, 4)])
def test_ranks_share_one_permutation_of_each_epoch(n, world):
    shares = [epoch_order(1, 2, n, rank, world) for rank in range(world)]
    seen = [i for share in shares for i in share]
    assert set(seen) == set(range(n)) and len(seen) == world * -(-n // world)  # padded as DistributedSampler
    assert all(len(share) == len(shares[0]) for share in shares)


def test_stream_seeds_differ_for_every_key_and_stream():
    keys = list(itertools.product(range(4), range(-2, 30), range(8)))
    seeds = {stream_seed(*key) for key in keys}
    assert len(seeds) == len(keys) and all(0 <= s < 2 ** 63 for s in seeds)
    assert stream_seed(0, 1, 0) != stream_seed(0, 0, 1)


def test_ft_and_regularized_runs_of_one_seed_see_the_same_images_at_every_step(data_root, tmp_path, monkeypatch):
    """Augmentation (torch's global RNG with NUM_WORKERS 0) and data order do not depend on the method:
    the regularizer's noise has its own generator."""
    seen = {}
    run_step = ClassificationTrainer.run_step

    def recording(self, batch):
        seen.setdefault(self.cfg.MODEL.ADARAND.METHOD, []).append((batch[0].clone(), batch[1].clone()))
        return run_step(self, batch)

    monkeypatch.setattr(ClassificationTrainer, "run_step", recording)
    for method in ("none", "adarand", "ptr"):
        cfg = load_cfg("", tiny_opts(data_root, tmp_path / method, **{"SOLVER.EPOCHS": 2, "SEED": 3,
                                                                       "MODEL.ADARAND.METHOD": method,
                                                                       "MODEL.ADARAND.PTR_THRESHOLD": 100.0}))
        cli.train(cfg, progress=False)
    steps = len(seen["none"])
    assert steps == 6
    for method in ("adarand", "ptr"):
        assert len(seen[method]) == steps
        for step, ((images, labels), (ft_images, ft_labels)) in enumerate(zip(seen[method], seen["none"])):
            assert torch.equal(labels, ft_labels) and torch.equal(images, ft_images), (method, step)


def test_the_noise_generator_is_checkpointed_per_run(data_root, tmp_path):
    """The regularizer's noise stream is part of the run's RNG state in last.pth."""
    cfg = load_cfg("", tiny_opts(data_root, tmp_path, **{"SOLVER.EPOCHS": 1, "MODEL.ADARAND.METHOD": "adarand"}))
    cli.train(cfg, progress=False)
    ckpt = torch.load(tmp_path / "last.pth", weights_only=True)
    assert "noise" in ckpt["rng"][0]
    fresh = torch.Generator().manual_seed(stream_seed(NOISE, cfg.SEED, 0))
    assert not torch.equal(ckpt["rng"][0]["noise"], fresh.get_state())  # it advanced with the noise draws
