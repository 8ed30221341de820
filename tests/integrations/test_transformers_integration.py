"""AdaRandTrainer / AdaRandMixin: Trainer.train fine-tunes a ViTForImageClassification (tiny config, random
weights) on a few generated images with AdaRand: the term is in the loss, the prior moves once per optimizer
step, checkpoints restore it exactly, Trainer.evaluate is unchanged, the mixin composes with a user's own
Trainer subclass, and the logs carry adarand/loss and adarand/prior_loss gathered as the Trainer's loss."""
import copy
import os

import pytest
import torch
from transformers import Trainer, TrainerCallback, TrainingArguments, ViTConfig, ViTForImageClassification

import adarand
from adarand.integrations import transformers as integration
from adarand.integrations.transformers import AdaRandMixin, AdaRandTrainer
from adarand.prior import NonFinitePriorError

C = 3


class Images(torch.utils.data.Dataset):
    def __init__(self, n=12, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.labels = torch.arange(n) % C
        self.images = torch.randn(n, 3, 16, 16, generator=g) + self.labels[:, None, None, None]

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"pixel_values": self.images[i], "labels": self.labels[i]}


def vit():
    torch.manual_seed(0)
    return ViTForImageClassification(ViTConfig(image_size=16, patch_size=8, hidden_size=16, num_hidden_layers=1,
                                               num_attention_heads=2, intermediate_size=32, num_labels=C))


def arguments(out, epochs=2, **kwargs):
    kwargs = {"logging_steps": 1, **kwargs}
    return TrainingArguments(out, num_train_epochs=epochs, per_device_train_batch_size=4, per_device_eval_batch_size=4,
                             learning_rate=1e-3, report_to=[], use_cpu=True, save_strategy="epoch",
                             disable_tqdm=True, seed=0, **kwargs)


def test_train_adds_the_term_steps_the_prior_and_checkpoints_restore_it(tmp_path):
    model = vit()
    start = copy.deepcopy(model)
    trainer = AdaRandTrainer(model=model, args=arguments(str(tmp_path), gradient_accumulation_steps=2),
                             train_dataset=Images(), head="classifier")
    trainer.train()
    state = trainer.adarand.state_dict()
    assert trainer.state.global_step == 4  # 2 epochs x 3 batches, accumulated by 2 (the last step of an epoch: 1)
    assert int(state["regularizer.prior.optimizer.num_steps"]) == 4
    assert trainer.adarand.regularizer.prior.optimizer.total_steps == 4
    logs = [log for log in trainer.state.log_history if "loss" in log]
    assert len(logs) == 4 and all(log["adarand/loss"] > 0 and log["adarand/prior_loss"] >= 0 for log in logs)
    assert all(log["adarand/skipped_batches"] == 0 for log in logs)
    stats = adarand.compute_class_stats(lambda x: start.eval().vit(x).last_hidden_state[:, 0],
                                        torch.utils.data.DataLoader(Images(), batch_size=4,
                                                                    collate_fn=lambda b: (
                                                                        torch.stack([i["pixel_values"] for i in b]),
                                                                        torch.stack([i["labels"] for i in b]))),
                                        C, progress=False)
    assert (state["regularizer.prior.mu"] - stats.mean).abs().max() > 1e-4  # the prior moved from Eq. 9-10

    saved = torch.load(os.path.join(tmp_path, "checkpoint-4", "adarand.pt"), weights_only=True)
    for key, value in state.items():
        assert torch.equal(saved[key], value), key

    seen = {}

    class Probe(AdaRandTrainer):
        def _attach_adarand(self, max_steps):
            super()._attach_adarand(max_steps)
            seen.update({k: v.clone() for k, v in self.adarand.state_dict().items()})

    resumed = Probe(model=vit(), args=arguments(str(tmp_path), epochs=3, gradient_accumulation_steps=2),
                    train_dataset=Images(), head="classifier")
    resumed.train(resume_from_checkpoint=True)
    for key, value in state.items():  # restored exactly, not recomputed
        assert torch.equal(seen[key], value), key
    assert int(resumed.adarand.state_dict()["regularizer.prior.optimizer.num_steps"]) == 6

    # issue 28, item 12: an adarand.pt whose prior holds NaN is refused at the start, naming the file
    saved["regularizer.prior.mu"][0, 0] = float("nan")
    torch.save(saved, os.path.join(tmp_path, "checkpoint-4", "adarand.pt"))
    diverged = AdaRandTrainer(model=vit(), args=arguments(str(tmp_path), epochs=3, gradient_accumulation_steps=2),
                              train_dataset=Images(), head="classifier")
    with pytest.raises(NonFinitePriorError, match=r"checkpoint-4/adarand.pt: the prior state regularizer.prior.mu"):
        diverged.train(resume_from_checkpoint=os.path.join(tmp_path, "checkpoint-4"))


def test_resume_without_a_checkpoint_is_an_error_as_in_trainer(tmp_path):
    """Issue 28, item 13: True with no checkpoint raises Trainer's own error (it trained from scratch)."""
    trainer = AdaRandTrainer(model=vit(), args=arguments(str(tmp_path), epochs=1), train_dataset=Images())
    with pytest.raises(ValueError, match="No valid checkpoint found in output directory"):
        trainer.train(resume_from_checkpoint=True)
    assert trainer.state.global_step == 0 and trainer.adarand is None


def test_resume_from_a_plain_trainer_checkpoint_says_what_to_do(tmp_path):
    """Issue 28, item 13: a checkpoint without adarand.pt is refused before training, naming the file and the
    ways on."""
    plain = Trainer(model=vit(), args=arguments(str(tmp_path), epochs=1, max_steps=1), train_dataset=Images())
    plain.train()
    checkpoint = os.path.join(tmp_path, "checkpoint-1")
    trainer = AdaRandTrainer(model=vit(), args=arguments(str(tmp_path), epochs=1), train_dataset=Images())
    with pytest.raises(FileNotFoundError, match=r"checkpoint-1/adarand.pt not found: .*not written by AdaRandTrainer"
                                                r".*from_pretrained.*without resume_from_checkpoint"):
        trainer.train(resume_from_checkpoint=checkpoint)
    assert trainer.state.global_step == 0 and trainer.adarand is None


def test_the_term_equals_the_explicit_path_and_evaluate_is_unchanged(tmp_path):
    model = vit()
    trainer = AdaRandTrainer(model=model, args=arguments(str(tmp_path / "a"), epochs=1), train_dataset=Images(),
                             eval_dataset=Images(seed=1), head=model.classifier, adarand_options={"lam": 0.5})
    trainer.train()
    plain = Trainer(model=copy.deepcopy(model), args=arguments(str(tmp_path / "b"), epochs=1),
                    eval_dataset=Images(seed=1))
    before = copy.deepcopy(trainer.adarand.state_dict())
    assert trainer.evaluate()["eval_loss"] == plain.evaluate()["eval_loss"]  # no term in evaluation
    for key, value in before.items():  # and no step
        assert torch.equal(trainer.adarand.state_dict()[key], value), key
    batch = {"pixel_values": Images().images[:4], "labels": Images().labels[:4]}
    model.train()
    noise = trainer.adarand.regularizer.noise_generator  # the regularizer's own stream: rewound for the reference
    start = noise.get_state()
    torch.manual_seed(5)
    loss = trainer.compute_loss(model, dict(batch))
    torch.manual_seed(5)
    noise.set_state(start)
    features = model.vit(batch["pixel_values"]).last_hidden_state[:, 0]
    ce = torch.nn.functional.cross_entropy(model.classifier(features), batch["labels"])
    term = trainer.adarand.regularizer(features, batch["labels"])
    torch.testing.assert_close(loss, ce + term, rtol=0, atol=0)

    # a task loss normalised over 2 accumulated batches of 4 (num_items_in_batch = 8): the term is halved too
    trainer.current_gradient_accumulation_steps = 2
    torch.manual_seed(5)
    noise.set_state(start)
    loss = trainer.compute_loss(model, dict(batch), num_items_in_batch=torch.tensor(8))
    torch.testing.assert_close(loss, ce / 2 + term / 2, rtol=1e-6, atol=1e-7)


class SmoothedTrainer(Trainer):
    """A user's own Trainer subclass: label-smoothed cross-entropy, computed here."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        loss = torch.nn.functional.cross_entropy(outputs.logits, labels, label_smoothing=0.1)
        return (loss, outputs) if return_outputs else loss


class SmoothedAdaRandTrainer(AdaRandMixin, SmoothedTrainer):
    pass


def test_the_mixin_composes_with_a_users_trainer_subclass_and_resumes(tmp_path):
    model = vit()
    trainer = SmoothedAdaRandTrainer(model=model, args=arguments(str(tmp_path)), train_dataset=Images(),
                                     head="classifier", adarand_options={"lam": 0.5})
    trainer.train()
    state = {k: v.clone() for k, v in trainer.adarand.state_dict().items()}
    assert int(state["regularizer.prior.optimizer.num_steps"]) == 6
    assert sum("adarand/prior_loss" in log for log in trainer.state.log_history) == 6
    batch = {"pixel_values": Images().images[:4], "labels": Images().labels[:4]}
    model.train()
    noise = trainer.adarand.regularizer.noise_generator
    start = noise.get_state()
    loss, outputs = trainer.compute_loss(model, dict(batch), return_outputs=True)
    noise.set_state(start)
    features = model.vit(batch["pixel_values"]).last_hidden_state[:, 0]
    smoothed = torch.nn.functional.cross_entropy(model.classifier(features), batch["labels"], label_smoothing=0.1)
    torch.testing.assert_close(loss, smoothed + trainer.adarand.regularizer(features, batch["labels"]))
    assert outputs.logits.shape == (4, C)

    resumed = SmoothedAdaRandTrainer(model=vit(), args=arguments(str(tmp_path), epochs=3), train_dataset=Images(),
                                     head="classifier", adarand_options={"lam": 0.5})
    seen = {}

    class Probe(TrainerCallback):  # runs after the mixin's own on_train_begin, which restores the prior
        def on_train_begin(self, args, state, control, **kwargs):
            seen.update({k: v.clone() for k, v in resumed.adarand.state_dict().items()})

    resumed.add_callback(Probe())
    resumed.train(resume_from_checkpoint=True)
    for key, value in state.items():  # restored exactly
        assert torch.equal(seen[key], value), key


def test_the_logged_terms_are_gathered_over_processes_as_the_trainers_loss(tmp_path, monkeypatch):
    """Two processes' means m and m + 2 are logged as their mean m + 1, through the gather the Trainer uses."""
    gathered = []

    def two_processes(tensor, parallel_mode):
        gathered.append(tensor)
        return torch.stack([tensor, tensor + 2])

    monkeypatch.setattr(integration, "nested_gather", two_processes)
    trainer = AdaRandTrainer(model=vit(), args=arguments(str(tmp_path), epochs=1, logging_steps=3),
                             train_dataset=Images())
    trainer.train()
    (log,) = [log for log in trainer.state.log_history if "loss" in log]
    loss, prior_loss = gathered
    assert log["adarand/loss"] == pytest.approx(loss.item() + 1) and loss.item() > 0
    assert log["adarand/prior_loss"] == pytest.approx(prior_loss.item() + 1)
