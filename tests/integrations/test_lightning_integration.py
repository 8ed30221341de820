"""AdaRand in Lightning: the LightningModule owns the regularizer (``adarand.attach(self, ...)``), the
AdaRandCallback computes the statistics at the start of training and steps the prior once per optimizer
step. Trainer.fit on CPU with generated images: the term is in the loss, the prior moves, checkpoints
restore it exactly (under gradient accumulation and bf16-mixed), the statistics pass reads only the
batches the fit trains on, and 2-process ddp_spawn keeps one prior and returns it to the main process."""
import lightning as L
import pytest
import torch
import torchvision
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

import adarand
from adarand.integrations.lightning import AdaRandCallback
from adarand.prior import NonFinitePriorError

C = 3


def mlp():
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 8), torch.nn.ReLU(),
                               torch.nn.Linear(8, C))


class Lit(L.LightningModule):
    """The documented shape: the module attaches in ``__init__`` and adds ``self.adarand.loss(y)``."""

    def __init__(self, net=mlp, head="model.3", callback=None, save_to=None, **options):
        super().__init__()
        self.model = net()
        self.adarand = adarand.attach(self, head, **options)
        self.callback = callback or AdaRandCallback()
        self.save_to = save_to  # ddp_spawn test: where each rank saves its prior at the end
        self.records = []  # (cross-entropy, loss returned) per training step
        self.state_at_start = None

    def configure_callbacks(self):
        return [self.callback]

    def forward(self, x):
        return self.model(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        ce = F.cross_entropy(self(x), y)
        loss = ce + self.adarand.loss(y)
        self.records.append((ce.detach().float(), loss.detach().float()))
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", F.cross_entropy(self(x), y))

    def on_train_start(self):  # runs after the callbacks' on_train_start
        self.state_at_start = {k: v.clone() for k, v in self.adarand.state_dict().items()}

    def on_train_end(self):
        if self.save_to is not None:
            torch.save(self.adarand.state_dict(), self.save_to / f"rank{self.global_rank}.pt")

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


class Counted(TensorDataset):
    """Counts the samples read."""

    reads = 0

    def __getitem__(self, i):
        Counted.reads += 1
        return super().__getitem__(i)


def loader(size=8, n=24):
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % C
    images = torch.randn(n, 3, size, size, generator=g) + labels[:, None, None, None]
    return DataLoader(Counted(images, labels), batch_size=4, shuffle=False)


def trainer(tmp_path, epochs=2, **kwargs):
    kwargs = {"accelerator": "cpu", "devices": 1, "logger": False, "enable_progress_bar": False, **kwargs}
    return L.Trainer(max_epochs=epochs, enable_model_summary=False, enable_checkpointing=False,
                     default_root_dir=tmp_path, **kwargs)


def num_steps(state):
    return int(state["regularizer.prior.optimizer.num_steps"])


@pytest.mark.slow
def test_a_resnet_fit_adds_the_term_and_starts_from_the_data_statistics(tmp_path):
    L.seed_everything(0)
    module = Lit(lambda: torchvision.models.resnet18(num_classes=C), "model.fc")
    fit = trainer(tmp_path, accumulate_grad_batches=2, log_every_n_steps=1)
    fit.fit(module, loader(32))
    assert fit.global_step == 6 and num_steps(module.adarand.state_dict()) == 6
    assert module.adarand.regularizer.prior.optimizer.total_steps == 6  # trainer.estimated_stepping_batches
    assert len(module.records) == 12 and all(loss > ce for ce, loss in module.records)
    assert {"adarand/loss", "adarand/prior_loss", "adarand/skipped_batches"} <= set(fit.callback_metrics)
    start = module.state_at_start
    assert (module.adarand.regularizer.prior.mu - start["regularizer.prior.mu"]).abs().max() > 1e-4
    # statistics at fit start equal those of the library's own pass (model in eval mode, before training)
    L.seed_everything(0)
    fresh = torchvision.models.resnet18(num_classes=C)
    stats = adarand.compute_class_stats(lambda x: torch.flatten(torch.nn.Sequential(
        *list(fresh.children())[:-1]).eval()(x), 1), loader(32), C, progress=False)
    torch.testing.assert_close(start["regularizer.prior.mu"], stats.mean, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("accumulate,precision", [(2, "32-true"), (1, "bf16-mixed")])
def test_the_module_checkpoint_carries_the_prior_and_resume_restores_it_exactly(tmp_path, accumulate, precision):
    L.seed_everything(0)
    module = Lit()
    fit = trainer(tmp_path, accumulate_grad_batches=accumulate, precision=precision)
    fit.fit(module, loader())
    steps = 6 // accumulate * 2
    assert fit.global_step == steps and num_steps(module.adarand.state_dict()) == steps  # once per optimizer step
    assert all(loss > ce for ce, loss in module.records)
    now = module.adarand.state_dict()
    assert (now["regularizer.prior.mu"] - module.state_at_start["regularizer.prior.mu"]).abs().max() > 1e-5
    assert torch.isfinite(now["regularizer.prior.mu"]).all()

    path = tmp_path / "last.ckpt"
    fit.save_checkpoint(path)
    saved = torch.load(path, weights_only=True)["state_dict"]  # the module's own state_dict
    for key, value in now.items():
        assert torch.equal(saved["adarand." + key], value), key

    resumed = Lit()
    trainer(tmp_path, epochs=3, accumulate_grad_batches=accumulate, precision=precision).fit(
        resumed, loader(), ckpt_path=path)
    for key, value in now.items():  # restored exactly, not recomputed from data
        assert torch.equal(resumed.state_at_start[key], value), key
    assert num_steps(resumed.adarand.state_dict()) == steps * 3 // 2


@pytest.mark.parametrize("limits,batches", [({"fast_dev_run": 1}, 1), ({"limit_train_batches": 2}, 2)])
def test_the_statistics_pass_reads_only_the_batches_the_fit_trains_on(tmp_path, limits, batches):
    module = Lit()
    fit = trainer(tmp_path, epochs=1, **limits)
    Counted.reads = 0
    fit.fit(module, loader())
    assert Counted.reads == 2 * batches * 4  # statistics + training, batches of 4 (the loader has 6 batches)
    assert module.adarand.is_initialized and num_steps(module.adarand.state_dict()) == batches


@pytest.mark.parametrize("shown", [True, False])
def test_the_statistics_pass_shows_progress_where_the_trainer_does(tmp_path, capsys, shown):
    trainer(tmp_path, epochs=1, limit_train_batches=1, enable_progress_bar=shown).fit(Lit(), loader())
    assert ("class statistics" in capsys.readouterr().err) == shown


def test_validation_between_accumulated_batches_changes_nothing(tmp_path):
    """Validation (under no_grad) after batch 3 falls inside an accumulation of batches 3-4: the step after
    batch 4 still updates on both, and validation adds no step."""
    L.seed_everything(0)
    module = Lit()
    fit = trainer(tmp_path, epochs=1, accumulate_grad_batches=2, val_check_interval=3, limit_val_batches=2,
                  num_sanity_val_steps=1)
    fit.fit(module, loader(), loader())
    assert fit.global_step == 3 and num_steps(module.adarand.state_dict()) == 3


def test_log_options_reach_lightning(tmp_path):
    module = Lit(callback=AdaRandCallback(prog_bar=True, on_epoch=True))
    fit = trainer(tmp_path, epochs=1)
    fit.fit(module, loader())
    assert {"adarand/loss_step", "adarand/loss_epoch", "adarand/prior_loss_epoch"} <= set(fit.callback_metrics)
    assert "adarand/loss_step" in fit.progress_bar_metrics


def test_a_checkpoint_with_a_non_finite_prior_is_refused_naming_it(tmp_path):
    """Issue 28, item 12: a Lightning checkpoint whose prior holds NaN stops the fit at its start, naming the file."""
    L.seed_everything(0)
    module = Lit()
    fit = trainer(tmp_path, epochs=1)
    fit.fit(module, loader())
    path = tmp_path / "diverged.ckpt"
    fit.save_checkpoint(path)
    ckpt = torch.load(path, weights_only=True)
    ckpt["state_dict"]["adarand.regularizer.prior.running_mean"][0, 0] = float("inf")
    torch.save(ckpt, path)
    fresh = Lit()
    mu = fresh.adarand.regularizer.prior.mu.clone()
    with pytest.raises(NonFinitePriorError, match="diverged.ckpt: the prior state adarand.regularizer.prior.running"):
        trainer(tmp_path, epochs=2).fit(fresh, loader(), ckpt_path=path)
    assert torch.equal(fresh.adarand.regularizer.prior.mu, mu)


def test_the_callback_needs_the_module_to_own_one_regularizer(tmp_path):
    class Plain(Lit):
        def __init__(self):
            super().__init__()
            del self.adarand

    with pytest.raises(RuntimeError, match=r"Plain has 0 AdaRand regularizers.*adarand.attach\(self"):
        trainer(tmp_path, epochs=1).fit(Plain(), loader())
    with pytest.raises(ValueError, match="go to adarand.attach"):
        AdaRandCallback(lam=0.5)


class OldLit(Lit):
    """The deprecated usage: the callback attaches and keeps the state in its checkpoint entry."""

    def __init__(self):
        super().__init__()
        self.adarand.remove()  # off the head: the callback attaches its own
        del self.adarand
        with pytest.warns(FutureWarning, match=r"adarand.attach\(self, 'model.3'"):
            self.callback = AdaRandCallback(head="model.3")
        self.adarand = self.callback

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self(x), y) + self.callback.loss(y)

    def on_train_start(self):
        self.state_at_start = {k: v.clone() for k, v in self.callback.attached.state_dict().items()}


def test_the_deprecated_callback_owned_usage_still_trains_and_resumes(tmp_path):
    L.seed_everything(0)
    module = OldLit()
    fit = trainer(tmp_path, epochs=1)
    fit.fit(module, loader())
    now = module.callback.attached.state_dict()
    path = tmp_path / "old.ckpt"
    fit.save_checkpoint(path)
    assert torch.equal(torch.load(path, weights_only=True)["callbacks"][module.callback.state_key]["regularizer"][
        "regularizer.prior.mu"], now["regularizer.prior.mu"])
    resumed = OldLit()
    trainer(tmp_path, epochs=2).fit(resumed, loader(), ckpt_path=path)
    for key, value in now.items():
        assert torch.equal(resumed.state_at_start[key], value), key
    assert num_steps(resumed.callback.attached.state_dict()) == 12


@pytest.mark.slow
def test_ddp_spawn_on_two_cpu_processes_keeps_one_prior_and_returns_it_to_the_main_process(tmp_path):
    """ddp_spawn runs fit in two child processes (gloo); the main process's module gets rank 0's trained state."""
    L.seed_everything(0)
    module = Lit(save_to=tmp_path)
    start = {k: v.clone() for k, v in module.adarand.state_dict().items()}
    fit = trainer(tmp_path, strategy="ddp_spawn", devices=2)
    fit.fit(module, loader())
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert num_steps(ranks[0]) == 6  # 24 images, 2 ranks x batches of 4, 2 epochs
    for key, value in ranks[0].items():
        if key != "noise_state":  # the regularizer's noise stream is per rank by design
            assert torch.equal(value, ranks[1][key]), f"the ranks' priors differ in {key}"
    main = module.adarand.state_dict()
    assert main["initialized"] and module.adarand.is_initialized
    for key in start:  # the main process's module holds the trained prior
        assert torch.equal(main[key], ranks[0][key]), key
    assert not torch.equal(main["regularizer.prior.mu"], start["regularizer.prior.mu"])
