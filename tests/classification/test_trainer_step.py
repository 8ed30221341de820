"""The classification trainer's step: no host sync from adarand between log periods, and the
regularizer's device counters read back exactly on the log period (and at the end of an epoch)."""
from unittest import mock

import pytest

from adarand.classification.config import load_cfg
from adarand.classification.trainer import ClassificationTrainer
from sync_audit import SyncAudit, values_unchecked  # noqa: E402  (tests/ is on sys.path under pytest)
from tiny_runs import tiny_opts  # noqa: E402


def tiny_trainer(data_root, out, **values):
    trainer = ClassificationTrainer(load_cfg("", tiny_opts(data_root, out, **{"SOLVER.EPOCHS": 1, **values})),
                                    progress=False)
    trainer.resume_or_load(resume=False)
    values_unchecked(trainer.regularizer)  # value checks at their CUDA default (off)
    return trainer


@pytest.mark.parametrize("name", ["none", "fnp", "randreg-normal", "adarand", "ptr"])
def test_classification_step_issues_no_sync(data_root, tmp_path, name):
    """run_step and every default hook's after_step (prior step, LR schedule, metric sums, divergence
    flags, diagnostics), off the log period, as train() runs them."""
    trainer = tiny_trainer(data_root, tmp_path, **{"MODEL.ADARAND.METHOD": name, "LOG_PERIOD": 100})
    if name == "ptr":
        trainer.regularizer.enabled.fill_(True)
    trainer.before_train()
    trainer.before_epoch()
    batch = next(iter(trainer.train_loader))
    with SyncAudit() as audit:
        for trainer.inner_iter in (1, 2):
            trainer.before_step()
            trainer.run_step(batch)
            trainer.after_step()
    audit.assert_none_ours()
    metrics = next(h for h in trainer._hooks if type(h).__name__ == "TrainingMetrics")
    assert metrics.sums[5].item() == 2 * len(batch[1]) and metrics.sums.isfinite().all()


def test_classification_epoch_checks_the_counters_on_its_log_period(data_root, tmp_path):
    """(On the CPU torch's cross_entropy refuses a bad label itself; on CUDA it is a device assert.)"""
    trainer = tiny_trainer(data_root, tmp_path, **{"MODEL.ADARAND.METHOD": "adarand", "LOG_PERIOD": 2})
    reg = trainer.regularizer
    reg.check_device_errors = mock.Mock(wraps=reg.check_device_errors)
    assert len(trainer.train_loader) == 3  # 24 training images, batch 8
    trainer.train()
    assert reg.check_device_errors.call_count == 3  # steps 0 and 2, and the end of the epoch
    record = trainer.storage.history[0]
    assert record["adarand/skipped_batches"] == 0 and record["adarand/loss"] > 0  # the one logging vocabulary
    assert record["adarand/prior_loss"] >= 0  # the epoch's mean prior loss (3 prior steps)


def _first_epoch(data_root, out, **values):
    """(training subset, validation subset, the first epoch's batches of raw image indices)."""
    trainer = ClassificationTrainer(load_cfg("", tiny_opts(data_root, out, **{"SOLVER.EPOCHS": 1, **values})),
                                    progress=False)
    trainer.train_loader.sampler.set_epoch(0)
    train = trainer.data.train.indices
    order = [train[i] for i in trainer.train_loader.sampler]
    size = trainer.train_loader.batch_size
    return train, trainer.data.val.indices, [order[i:i + size] for i in range(0, len(order), size)]


def test_training_seed_sets_the_data_order_and_dataset_seed_the_split(data_root, tmp_path):
    """SEED 0 and 1 (same DATASET.SEED) share the subset and split but not the first epoch's batches;
    SEED 0 twice gives the same batches."""
    train0, val0, batches0 = _first_epoch(data_root, tmp_path / "a", SEED=0)
    train1, val1, batches1 = _first_epoch(data_root, tmp_path / "b", SEED=1)
    again_train, again_val, again = _first_epoch(data_root, tmp_path / "c", SEED=0)
    assert (train0, val0) == (train1, val1) == (again_train, again_val)
    assert batches0 == again
    assert batches0 != batches1 and sorted(sum(batches0, [])) == sorted(sum(batches1, []))
    other_split = _first_epoch(data_root, tmp_path / "d", SEED=0, **{"DATASET.SEED": 5})
    assert other_split[1] != val0


class NoHooks(ClassificationTrainer):
    def build_hooks(self):
        return []


def test_a_trainer_without_hooks_still_adapts_the_prior(data_root, tmp_path):
    """The prior step is the trainer's (``run_step``), not a hook's: overriding ``build_hooks`` cannot drop it."""
    trainer = NoHooks(load_cfg("", tiny_opts(data_root, tmp_path, **{"SOLVER.EPOCHS": 1,
                                                                      "MODEL.ADARAND.METHOD": "adarand"})),
                      progress=False)
    trainer.resume_or_load(resume=False)
    prior = trainer.regularizer.prior
    start = prior.mu.detach().clone()
    assert trainer._hooks == [] and int(prior.optimizer.num_steps) == 0
    trainer.before_train()
    trainer.before_epoch()
    for trainer.inner_iter, batch in enumerate(trainer.train_loader):
        trainer.run_step(batch)
    trainer.after_epoch()
    assert int(prior.optimizer.num_steps) == len(trainer.train_loader) == 3
    assert not prior.mu.equal(start)
    assert trainer.storage.record["adarand/prior_loss"] >= 0  # the epoch's mean, in the record without a hook
