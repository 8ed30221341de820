"""AdaRandCallback: a Lightning Trainer.fit (CPU, 2 epochs, a torchvision ResNet-18 with random weights,
tiny images) fine-tunes with AdaRand: the term is in the loss, the prior steps once per optimizer step
(gradient accumulation honoured) and moves, checkpoints restore it exactly."""
import lightning as L
import pytest
import torch
import torchvision
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

import adarand
from adarand.integrations.lightning import AdaRandCallback

C = 3


class Lit(L.LightningModule):
    def __init__(self, **options):
        super().__init__()
        self.model = torchvision.models.resnet18(num_classes=C)
        self.adarand = AdaRandCallback(head="model.fc", **options)
        self.records = []  # (cross-entropy, loss returned) per training step
        self.state_at_start = None

    def configure_callbacks(self):
        return [self.adarand]

    def forward(self, x):
        return self.model(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        ce = F.cross_entropy(self(x), y)
        loss = ce + self.adarand.loss(y)
        self.records.append((ce.detach(), loss.detach()))
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", F.cross_entropy(self(x), y))

    def on_train_start(self):  # runs after the callbacks' on_train_start
        self.state_at_start = {k: v.clone() for k, v in self.adarand.attached.state_dict().items()}

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def loader():
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(24) % C
    images = torch.randn(24, 3, 32, 32, generator=g) + labels[:, None, None, None]
    return DataLoader(TensorDataset(images, labels), batch_size=4, shuffle=False)


def trainer(tmp_path, epochs, **kwargs):
    return L.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                     enable_model_summary=False, enable_checkpointing=False, default_root_dir=tmp_path, **kwargs)


@pytest.mark.slow
def test_fit_adds_the_term_steps_per_optimizer_step_and_checkpoints_restore(tmp_path):
    L.seed_everything(0)
    module = Lit()
    fit = trainer(tmp_path, epochs=2, accumulate_grad_batches=2, log_every_n_steps=1)
    fit.fit(module, loader())
    attached = module.adarand.attached
    assert fit.global_step == 6  # 2 epochs x 6 batches / 2 accumulated
    assert int(attached.state_dict()["regularizer.prior.optimizer.num_steps"]) == fit.global_step
    assert attached.regularizer.prior.optimizer.total_steps == 6  # trainer.estimated_stepping_batches
    assert all(loss > ce for ce, loss in module.records)  # the term is in the training loss
    assert len(module.records) == 12
    assert "adarand/loss" in fit.callback_metrics and "adarand/prior_loss" in fit.callback_metrics
    start, now = module.state_at_start, attached.state_dict()
    assert (now["regularizer.prior.mu"] - start["regularizer.prior.mu"]).abs().max() > 1e-4  # the prior moved
    # statistics at fit start equal those of the library's own pass (model in eval mode, before training)
    L.seed_everything(0)
    fresh = Lit()
    stats = adarand.compute_class_stats(lambda x: torch.flatten(torch.nn.Sequential(
        *list(fresh.model.children())[:-1]).eval()(x), 1), loader(), C, progress=False)
    torch.testing.assert_close(start["regularizer.prior.mu"], stats.mean, rtol=1e-5, atol=1e-6)

    path = tmp_path / "last.ckpt"
    fit.save_checkpoint(path)
    saved = torch.load(path, weights_only=True)["callbacks"][module.adarand.state_key]["regularizer"]
    for key, value in now.items():
        assert torch.equal(saved[key], value), key

    resumed = Lit()
    trainer(tmp_path, epochs=3, accumulate_grad_batches=2).fit(resumed, loader(), ckpt_path=path)
    for key, value in now.items():  # restored exactly, not recomputed from data
        assert torch.equal(resumed.state_at_start[key], value), key
    assert int(resumed.adarand.attached.state_dict()["regularizer.prior.optimizer.num_steps"]) == 9


def test_validation_between_accumulated_batches_changes_nothing(tmp_path):
    """Validation (under no_grad) after batch 3 falls inside an accumulation of batches 3-4: the step after
    batch 4 still updates on both, and validation adds no step."""
    L.seed_everything(0)
    module = Lit()
    fit = trainer(tmp_path, epochs=1, accumulate_grad_batches=2, val_check_interval=3, limit_val_batches=2,
                  num_sanity_val_steps=1)
    fit.fit(module, loader(), loader())
    assert fit.global_step == 3
    assert int(module.adarand.attached.state_dict()["regularizer.prior.optimizer.num_steps"]) == 3


class TinyLit(Lit):
    """Lit with a two-layer MLP instead of a ResNet: for the checks that need a fit, not a network."""

    def __init__(self):
        super().__init__()
        self.model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 8), torch.nn.ReLU(),
                                         torch.nn.Linear(8, C))
        self.adarand = AdaRandCallback(head="model.3")


def test_a_checkpoint_with_a_non_finite_prior_is_refused_naming_it(tmp_path):
    """Issue 28, item 12: a Lightning checkpoint whose prior holds NaN stops the fit at its start, naming the file,
    also when the callback is already attached (a second fit)."""
    from adarand.prior import NonFinitePriorError

    L.seed_everything(0)
    module = TinyLit()
    fit = trainer(tmp_path, epochs=1)
    fit.fit(module, loader())
    path = tmp_path / "diverged.ckpt"
    fit.save_checkpoint(path)
    ckpt = torch.load(path, weights_only=True)
    ckpt["callbacks"][module.adarand.state_key]["regularizer"]["regularizer.prior.running_mean"][0, 0] = float("inf")
    torch.save(ckpt, path)
    mu = module.adarand.attached.regularizer.prior.mu.clone()
    for fitted in (TinyLit(), module):  # a fresh module, then the one already attached
        with pytest.raises(NonFinitePriorError, match="diverged.ckpt: the prior state regularizer.prior.running_mean"):
            trainer(tmp_path, epochs=2).fit(fitted, loader(), ckpt_path=path)
    assert torch.equal(module.adarand.attached.regularizer.prior.mu, mu)
