"""adarand.attach against the explicit library path: the same statistics, loss, gradients and prior,
with the model's outputs untouched; its refusals; gradient accumulation, no_grad evaluation,
checkpoints, torch.compile and two DDP ranks."""
import copy
import itertools
import math
import os

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import adarand
from adarand.seeding import NOISE, seeded_generator, stream_seed
from gloo_ranks import run_on_ranks  # noqa: E402  (tests/ is on sys.path under pytest)
from sync_audit import SyncAudit, values_unchecked  # noqa: E402  (tests/ is on sys.path under pytest)

C, IN, D = 4, 6, 8


class Net(nn.Module):
    """A body with BatchNorm (eval mode matters for the statistics) and a head at ``classifier.1``."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(IN, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, D), nn.ReLU())
        self.classifier = nn.Sequential(nn.Dropout(0.0), nn.Linear(D, C))

    def forward(self, x):
        return self.classifier(self.body(x))


def make_data(n=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % C
    return torch.randn(n, IN, generator=g) + labels[:, None].float(), labels


def batches(n=24, size=8, seed=0):
    x, y = make_data(n, seed)
    return [(x[i:i + size], y[i:i + size]) for i in range(0, n, size)]


def explicit_path(model, loader, **options):
    """The library path the README documents: a forward returning (features, logits), compute_class_stats."""
    reg = adarand.build_regularizer("adarand", C, D, **options)
    model.eval()
    reg.init_from_stats(adarand.compute_class_stats(model.body, loader, C, progress=False))
    model.train()
    return reg


def test_statistics_equal_the_explicit_path_in_eval_mode_and_modes_are_restored():
    torch.manual_seed(0)
    model = Net()
    twin = copy.deepcopy(model)
    model.body[1].eval()  # a user's frozen BatchNorm stays frozen after the pass
    bn_before = model.body[1].running_mean.clone()
    reg = adarand.attach(model, "classifier.1", total_steps=10)
    stats = reg.init_from_data(batches())
    want = adarand.compute_class_stats(twin.eval().body, batches(), C, progress=False)
    for name in ("mean", "std", "count", "global_mean", "global_std"):
        assert torch.equal(getattr(stats, name), getattr(want, name)), name
    assert torch.equal(reg.regularizer.prior.mu, want.mean) and torch.equal(reg.regularizer.prior.sigma, want.std)
    assert reg.is_initialized
    assert torch.equal(model.body[1].running_mean, bn_before)  # eval mode: BatchNorm statistics untouched
    assert model.training and model.body[0].training and not model.body[1].training


def test_loss_gradients_and_prior_equal_the_explicit_path_step_by_step():
    torch.manual_seed(0)
    model = Net()
    twin = copy.deepcopy(model)
    reg = adarand.attach(model, "classifier.1", total_steps=6, lam=0.7, seed=5)
    reg.init_from_data(batches())
    mu0 = reg.regularizer.prior.mu.clone()
    ref = explicit_path(twin, batches(), total_steps=6, lam=0.7)
    ref.noise_generator = seeded_generator(stream_seed(NOISE, 5, 0))  # attach's own noise stream (rank 0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ref_opt = torch.optim.SGD(twin.parameters(), lr=0.1)
    for step, (x, y) in enumerate(batches(48, 8, seed=1)):
        torch.manual_seed(100 + step)
        logits = model(x)
        term = reg.loss(y)
        torch.manual_seed(100 + step)
        features = twin.body(x)
        ref_logits = twin.classifier(features)
        ref_term = ref(features, y)
        assert torch.equal(logits, ref_logits) and torch.equal(term, ref_term), step
        (F.cross_entropy(logits, y) + term).backward()
        (F.cross_entropy(ref_logits, y) + ref_term).backward()
        for p, q in zip(model.parameters(), twin.parameters()):
            assert torch.equal(p.grad, q.grad), step
        opt.step(), ref_opt.step()
        opt.zero_grad(), ref_opt.zero_grad()
        prior_loss = reg.step()
        assert torch.equal(prior_loss, ref.step(features.detach(), y))
        for key, value in ref.state_dict().items():
            assert torch.equal(reg.regularizer.state_dict()[key], value), (step, key)
    assert (reg.regularizer.prior.mu - mu0).abs().max() > 1e-3  # the prior moved


def test_outputs_are_bit_identical_and_remove_leaves_no_hook():
    torch.manual_seed(0)
    model = Net()
    x, y = make_data()
    before = model(x)
    reg = adarand.attach(model, model.classifier[1])
    reg.init_from_data(batches())
    head = model.classifier[1]
    assert len(head._forward_hooks) == 1
    assert torch.equal(model(x), before)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), Net.forward(model, x))
    model.train()
    reg.remove()
    reg.remove()  # idempotent
    assert not head._forward_hooks and not head._forward_pre_hooks
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert torch.equal(model(x), before)
    with pytest.raises(RuntimeError, match="remove"):
        reg.loss(y)


def test_refusals_name_the_problem():
    model = Net()
    with pytest.raises(ValueError, match=r"no submodule 'fc'.*classifier\.1"):
        adarand.attach(model, "fc")
    with pytest.raises(TypeError, match=r"'classifier' is a Sequential, not a torch.nn.Linear"):
        adarand.attach(model, "classifier")
    with pytest.raises(ValueError, match="not a submodule"):
        adarand.attach(model, nn.Linear(D, C))
    with pytest.raises(ValueError, match="does not take option"):
        adarand.attach(model, "classifier.1", method="fnp", alpha=0.5)
    reg = adarand.attach(model, "classifier.1")
    x, y = make_data()
    with pytest.raises(RuntimeError, match="no forward has run"):
        reg.loss(y)
    model(x)
    with pytest.raises(RuntimeError, match="not initialised.*init_from_data"):
        reg.loss(y)
    reg.init_from_data(batches())
    with pytest.raises(RuntimeError, match="no loss"):
        reg.step()
    model(x)
    with pytest.raises(ValueError, match=r"shape \(24, 8\).*labels of shape \(5,\)"):
        reg.loss(y[:5])


def test_no_grad_evaluation_keeps_nothing_and_steps_nothing():
    torch.manual_seed(0)
    model = Net()
    reg = adarand.attach(model, "classifier.1", total_steps=5)
    reg.init_from_data(batches())
    state = copy.deepcopy(reg.regularizer.state_dict())
    x, y = make_data()
    model(x)  # a training forward ...
    with torch.no_grad():
        model.eval()(x)  # ... then evaluation drops its features
    with pytest.raises(RuntimeError, match="torch.no_grad"):
        reg.loss(y)
    with pytest.raises(RuntimeError, match="no loss"):
        reg.step()
    for key, value in state.items():
        assert torch.equal(reg.regularizer.state_dict()[key], value), key

    # evaluation between a training step's loss and its step() does not disturb the step
    model.train()
    torch.manual_seed(3)
    model(x)
    reg.loss(y)
    with torch.no_grad():
        model(x + 1.0)
    twin = adarand.build_regularizer("adarand", C, D, total_steps=5)
    twin.load_state_dict(state)
    reg.step()
    twin.step(model.body(x).detach(), y)
    assert torch.equal(reg.regularizer.prior.mu, twin.prior.mu)


def test_gradient_accumulation_steps_on_the_whole_batch():
    torch.manual_seed(0)
    model = Net()
    reg = adarand.attach(model, "classifier.1", total_steps=5)
    reg.init_from_data(batches())
    twin = adarand.build_regularizer("adarand", C, D, total_steps=5)
    twin.load_state_dict(reg.regularizer.state_dict())
    (x1, y1), (x2, y2) = batches(16, 8, seed=4)
    for x, y in ((x1, y1), (x2, y2)):
        model(x)
        reg.loss(y)
    reg.step()
    with torch.no_grad():
        twin.step(torch.cat([model.body(x1), model.body(x2)]), torch.cat([y1, y2]))
    for key, value in twin.state_dict().items():
        assert torch.equal(reg.regularizer.state_dict()[key], value), key
    assert int(twin.prior.optimizer.num_steps) == 1


def test_state_dict_checkpoints_the_prior_and_nothing_of_the_model(tmp_path):
    torch.manual_seed(0)
    model = Net()
    reg = adarand.attach(model, "classifier.1", total_steps=5)
    reg.init_from_data(batches())
    x, y = make_data()
    model(x)
    reg.loss(y)
    reg.step()
    assert all(key.startswith("regularizer.") or key in ("initialized", "noise_seed", "noise_state")
               for key in reg.state_dict())
    torch.save(reg.state_dict(), tmp_path / "adarand.pt")
    fresh = adarand.attach(copy.deepcopy(model), "classifier.1", total_steps=5)
    assert not fresh.is_initialized
    fresh.load_state_dict(torch.load(tmp_path / "adarand.pt", weights_only=True))
    assert fresh.is_initialized and fresh.regularizer.prior.initialized
    for key, value in reg.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key
    fresh.model(x)
    torch.manual_seed(1)
    a = fresh.loss(y)
    model(x)
    torch.manual_seed(1)
    assert torch.equal(a, reg.loss(y))  # ready without init_from_data


@pytest.mark.parametrize("saved_initialized", [True, False])
def test_initialized_is_the_priors_flag_and_a_saved_one_comes_back(saved_initialized):
    """One record of "initialised", the prior's; ``initialized`` in the state is a copy taken on save. A state saved
    before the statistics (its prior tensors are placeholders), and checkpoints from when ``initialized`` was a
    buffer of its own, load as they were saved; a fixed prior's former ``running_mean`` is dropped."""
    reg = adarand.attach(Net(), "classifier.1", method="randreg-cp")
    assert "initialized" not in dict(reg.named_buffers()) and not reg.is_initialized
    if saved_initialized:
        reg.init_from_data(batches())
    assert reg.is_initialized is reg.regularizer.prior.initialized is saved_initialized
    state = reg.state_dict()
    assert bool(state["initialized"]) is saved_initialized
    old = {**state, "regularizer.prior.running_mean": state["regularizer.prior.mu"].clone()}  # a buffer's format
    fresh = adarand.attach(Net(), "classifier.1", method="randreg-cp")
    fresh.load_state_dict(old)
    assert fresh.is_initialized is fresh.regularizer.prior.initialized is saved_initialized
    assert set(fresh.state_dict()) == set(state)


def test_with_total_steps_counts_only_when_the_method_takes_it_and_none_was_given():
    from adarand.attach import with_total_steps

    def refuse():
        raise AssertionError("counted the steps needlessly")

    assert with_total_steps("adarand", {"lam": 2.0}, lambda: 7) == {"lam": 2.0, "total_steps": 7}
    assert with_total_steps("adarand", {"total_steps": 3}, refuse) == {"total_steps": 3}
    assert with_total_steps("fnp", {"lam": 2.0}, refuse) == {"lam": 2.0}


def test_restore_or_init_loads_a_state_else_computes_the_statistics_once():
    torch.manual_seed(0)
    model = Net()
    made = []

    def make_loader():
        made.append(1)
        return batches()

    reg = adarand.attach(model, "classifier.1", total_steps=5)
    reg.restore_or_init(None, make_loader)
    assert reg.is_initialized and len(made) == 1
    reg.restore_or_init(None, make_loader)  # already initialised: no second pass
    assert len(made) == 1
    fresh = adarand.attach(copy.deepcopy(model), "classifier.1", total_steps=5)
    fresh.restore_or_init(reg.state_dict(), make_loader)
    assert fresh.is_initialized and len(made) == 1
    assert torch.equal(fresh.regularizer.prior.mu, reg.regularizer.prior.mu)


def test_loss_and_step_issue_no_host_sync():
    """What attach adds around the regularizer (the hook, the queue, the checks) reads nothing back."""
    torch.manual_seed(0)
    model = Net()
    reg = adarand.attach(model, "classifier.1", total_steps=5)
    reg.init_from_data(batches())
    values_unchecked(reg)
    with SyncAudit() as audit:
        for x, y in batches(16, 8, seed=2):
            model(x)
            reg.loss(y).backward()
            reg.step()
    audit.assert_none_ours()


def test_dict_inputs_through_batch_fn():
    class Keyword(Net):
        def forward(self, pixel_values):
            return super().forward(pixel_values)

    torch.manual_seed(0)
    model = Keyword()
    reg = adarand.attach(model, "classifier.1")
    stats = reg.init_from_data([{"pixel_values": x, "labels": y} for x, y in batches()],
                               batch_fn=lambda b: ({"pixel_values": b["pixel_values"]}, b["labels"]))
    want = adarand.compute_class_stats(copy.deepcopy(model).eval().body, batches(), C, progress=False)
    assert torch.equal(stats.mean, want.mean)


def test_ptr_gets_the_logits_and_head_weight():
    torch.manual_seed(0)
    model = Net()
    reg = adarand.attach(model, "classifier.1", method="ptr", threshold=10.0)
    reg.init_from_data(batches())  # PtR needs no statistics: a no-op
    ref = adarand.build_regularizer("ptr", C, D, threshold=10.0)
    x, y = make_data()
    logits = model(x)
    reg.on_epoch_end()
    torch.manual_seed(2)
    a = reg.loss(y)
    ref.on_epoch_end()
    torch.manual_seed(2)
    b = ref(model.body(x), y, logits=logits, classifier_weight=model.classifier[1].weight)
    assert torch.equal(a, b)


@pytest.mark.slow
def test_torch_compile_matches_eager():
    torch.manual_seed(0)
    eager = Net()
    compiled_src = copy.deepcopy(eager)
    compiled = torch.compile(compiled_src, backend="aot_eager")
    regs = [adarand.attach(m, "classifier.1", total_steps=4) for m in (eager, compiled)]
    for reg in regs:
        reg.init_from_data(batches())
    for step, (x, y) in enumerate(batches(16, 8, seed=5)):
        losses = []
        for model, reg in zip((eager, compiled), regs):
            logits = model(x)
            torch.manual_seed(step)
            loss = F.cross_entropy(logits, y) + reg.loss(y)
            loss.backward()
            losses.append(loss.detach())
            reg.step()
        torch.testing.assert_close(losses[0], losses[1], rtol=1e-6, atol=1e-6)
        for p, q in zip(eager.parameters(), compiled_src.parameters()):
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(regs[0].regularizer.prior.mu, regs[1].regularizer.prior.mu, rtol=1e-6, atol=1e-6)


def ddp_rank(rank):
    torch.manual_seed(0)
    ddp = nn.parallel.DistributedDataParallel(Net())
    reg = adarand.attach(ddp, "module.classifier.1", total_steps=3, seed=5)
    shards = batches(48, 8)[rank::2]  # each rank its own data
    stats = reg.init_from_data(shards)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
    for x, y in batches(48, 8, seed=7)[rank::2]:
        loss = F.cross_entropy(ddp(x), y) + reg.loss(y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        reg.step()
    return {"state": reg.state_dict(), "count": stats.count}


@pytest.mark.slow
def test_two_ddp_ranks_keep_identical_priors(tmp_path):
    ranks = run_on_ranks(ddp_rank, tmp_path)
    for key, value in ranks[0]["state"].items():
        if key != "noise_state":  # each rank draws its own noise: stream_seed(NOISE, seed, rank)
            assert torch.equal(value, ranks[1]["state"][key]), key
    assert not torch.equal(ranks[0]["state"]["noise_state"], ranks[1]["state"]["noise_state"])
    assert int(ranks[0]["count"].sum()) == 48  # statistics over both ranks' data
    assert int(ranks[0]["state"]["regularizer.prior.optimizer.num_steps"]) == 3


@pytest.mark.slow
def test_import_adarand_and_its_integrations_package_import_no_framework():
    """``import adarand`` (attach included) needs only torch; the frameworks load with their own submodule."""
    import subprocess
    import sys

    frameworks = ("lightning", "transformers", "timm", "torchvision", "detectron2")
    code = f"import sys, adarand, adarand.integrations; print([m for m in {frameworks} if m in sys.modules])"
    env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(adarand.__file__))}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert out.strip() == "[]"


def _user_loop(method, steps=6, seed=0):
    """A user's loop over a shuffled loader with dropout: the batches and dropout masks it saw, per step."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(IN, D), nn.Dropout(0.5), nn.Linear(D, C))
    x, y = make_data(48)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8, shuffle=True,
                                         generator=torch.Generator().manual_seed(seed))
    reg = None
    if method != "ft":
        reg = adarand.attach(model, "2", method=method, **({"total_steps": steps} if method == "adarand" else {}))
        reg.init_from_data(loader)  # a statistics pass over the training loader itself
    seen = []
    for images, labels in itertools.islice(loader, steps):
        hidden = model[1](model[0](images))
        seen.append((labels.clone(), hidden.detach().clone()))
        loss = F.cross_entropy(model[2](hidden), labels)
        if reg is not None:
            loss = loss + reg.loss(labels)
        loss.backward()
        if reg is not None:
            reg.step()
    return seen


@pytest.mark.parametrize("method", ["adarand", "ptr", "randreg-normal"])
def test_a_users_loop_sees_the_same_batches_and_dropout_with_and_without_the_regularizer(method):
    """init_from_data leaves the loader's generator and the global RNG as they were, and the noise has its
    own stream: the order and dropout masks equal plain fine-tuning's at every step."""
    ft, regularized = _user_loop("ft"), _user_loop(method)
    for step, ((labels, hidden), (ft_labels, ft_hidden)) in enumerate(zip(regularized, ft)):
        assert torch.equal(labels, ft_labels) and torch.equal(hidden, ft_hidden), step


def test_the_noise_stream_is_seeded_per_rank_and_restored_from_a_checkpoint():
    torch.manual_seed(0)
    model = Net()
    twin, other = copy.deepcopy(model), copy.deepcopy(model)
    a = adarand.attach(model, "classifier.1", total_steps=5, seed=11)
    a.init_from_data(batches())
    x, y = make_data()
    model(x)
    a.loss(y)
    a.step()
    state = a.state_dict()
    assert int(state["noise_seed"]) == 11
    b = adarand.attach(twin, "classifier.1", total_steps=5, seed=99)
    b.load_state_dict(state)
    model(x)
    twin(x)
    assert torch.equal(a.loss(y), b.loss(y))  # the same next draw, whatever the global RNG did
    legacy = {k: v for k, v in state.items() if not k.startswith("noise_")}  # a checkpoint from before
    c = adarand.attach(other, "classifier.1", total_steps=5, seed=7)
    c.load_state_dict(legacy)
    assert c.seed == 7


def test_loss_without_step_is_refused_past_max_pending():
    """Issue 28, item 10: a loop that never calls step() keeps a fixed prior; past max_pending loss() calls it is
    an error naming reg.step(), while an accumulation of max_pending micro-batches still steps on all of them."""
    torch.manual_seed(0)
    model = Net()
    reg = adarand.attach(model, "classifier.1", total_steps=5, max_pending=3)
    reg.init_from_data(batches())
    x, y = make_data()
    for _ in range(3):
        model(x)
        reg.loss(y)
    reg.step()  # three micro-batches of one optimizer step: accepted
    assert int(reg.regularizer.prior.optimizer.num_steps) == 1
    for _ in range(3):
        model(x)
        reg.loss(y)
    model(x)
    with pytest.raises(RuntimeError, match=r"3 loss\(\) calls without reg\.step\(\).*max_pending"):
        reg.loss(y)
    assert adarand.attach(Net(), "classifier.1").max_pending == 256  # the documented default
    with pytest.raises(ValueError, match="max_pending must be an integer >= 1"):
        adarand.attach(Net(), "classifier.1", max_pending=0)


@pytest.mark.parametrize("batch_of,error,match", [
    (lambda x, y: {"inputs": x, "labels": y}, TypeError, r"the loader gave a dict with keys \['inputs', 'labels'\]"),
    (lambda x, y: (x, y, "extra"), ValueError, "the loader gave a batch of 3 items"),
    (lambda x, y: (x, y.float()), TypeError, "labels of dtype torch.float32"),
])
def test_init_from_data_names_batch_fn_for_a_batch_of_another_form(batch_of, error, match):
    """Issue 28, item 14: dict batches, (x, y, extra) tuples and float labels are errors naming batch_fn and the
    expected form, before the model or the statistics see them."""
    reg = adarand.attach(Net(), "classifier.1")
    loader = [batch_of(x, y) for x, y in batches()]
    with pytest.raises(error, match=match + r".*batch_fn.*\(inputs, labels\)"):
        reg.init_from_data(loader)
    with pytest.raises(TypeError, match=r"batch_fn returned a dict .*fix batch_fn"):
        reg.init_from_data(batches(), batch_fn=lambda b: {"x": b[0]})
    assert not reg.is_initialized


@pytest.mark.parametrize("name", ["mu", "sigma", "running_mean"])
def test_a_non_finite_prior_is_refused_on_load(name):
    """Issue 28, item 12: a checkpoint of a diverged run is refused on load (naming the tensor, and the file
    where the caller knows it), before any training step."""
    from adarand.prior import NonFinitePriorError

    reg = adarand.attach(Net(), "classifier.1", total_steps=5)
    reg.init_from_data(batches())
    state = reg.state_dict()
    state[f"regularizer.prior.{name}"][1, 2] = float("nan")
    fresh = adarand.attach(Net(), "classifier.1", total_steps=5)
    with pytest.raises(NonFinitePriorError, match=f"regularizer.prior.{name} holds 1 NaN/Inf"):
        fresh.load_state_dict(state)
    assert not fresh.regularizer.prior.initialized and not fresh.regularizer.prior.mu.any()  # nothing copied
    with pytest.raises(NonFinitePriorError, match=f"run.pt: the prior state regularizer.prior.{name}"):
        fresh.restore_or_init(state, lambda: pytest.fail("statistics computed"), source="run.pt")


# Dense heads: a 1x1 Conv2d whose input cells are the rows (adarand.dense).

GRID, SOURCE = 9, 33  # a 33 x 33 image and label map give a 9 x 9 feature grid (non-integer ratio)


class DenseNet(nn.Module):
    """A convolutional body with BatchNorm and a per-pixel classifier ``head`` (1x1 Conv2d)."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 16, 3, stride=4, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                                  nn.Conv2d(16, D, 1), nn.ReLU())
        self.head = nn.Conv2d(D, C, 1)

    def forward(self, x):
        return self.head(self.body(x))


def dense_batches(n=8, size=4, seed=0):
    """Images and (n, 33, 33) label maps with 255 (ignore) pixels; the last image of each batch is all ignore."""
    g = torch.Generator().manual_seed(seed)
    maps = torch.randint(0, C, (n, SOURCE, SOURCE), generator=g)
    maps[:, :6] = 255
    maps[size - 1::size] = 255
    images = torch.randn(n, 3, SOURCE, SOURCE, generator=g) + maps[:, None].clamp(max=C).float()
    return [(images[i:i + size], maps[i:i + size]) for i in range(0, n, size)]


def loop_cell_labels(label_map):
    """float64 loop: cell (h, w) reads pixel (floor((h + 0.5) * 33 / 9), floor((w + 0.5) * 33 / 9)); 255 -> ignored."""
    out = torch.empty(label_map.shape[0], GRID * GRID, dtype=torch.int64)
    for b in range(label_map.shape[0]):
        for h in range(GRID):
            for w in range(GRID):
                value = int(label_map[b, math.floor((h + 0.5) * SOURCE / GRID), math.floor((w + 0.5) * SOURCE / GRID)])
                out[b, h * GRID + w] = adarand.IGNORE_INDEX if value == 255 else value
    return out


def test_dense_statistics_equal_a_float64_reference_over_the_labelled_cells():
    torch.manual_seed(0)
    model = DenseNet()
    twin = copy.deepcopy(model).eval()
    reg = adarand.attach(model, "head", total_steps=5)
    stats = reg.init_from_data(dense_batches())
    rows = {c: [] for c in range(C)}
    with torch.no_grad():
        for images, maps in dense_batches():
            features, labels = twin.body(images).double(), loop_cell_labels(maps)
            for b in range(images.shape[0]):
                for cell in range(GRID * GRID):
                    if labels[b, cell] != adarand.IGNORE_INDEX:
                        rows[int(labels[b, cell])].append(features[b, :, cell // GRID, cell % GRID])
    for c in range(C):
        z = torch.stack(rows[c])
        assert int(stats.count[c]) == len(rows[c]), c
        torch.testing.assert_close(stats.mean[c], z.mean(0).float(), rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(stats.std[c], z.std(0, unbiased=False).float(), rtol=1e-5, atol=1e-6)
    assert torch.equal(reg.regularizer.prior.mu, stats.mean) and model.training


def test_dense_loss_equals_a_float64_reference_on_the_drawn_cells():
    """sigma = 0, so r = mu: the loss is lambda * sum over the drawn labelled cells of ||f - mu_y||^2 / (n D), with the
    cells drawn by sample_pixels from the regularizer's own noise stream (seed 5, rank 0)."""
    torch.manual_seed(0)
    model = DenseNet()
    reg = adarand.attach(model, "head", total_steps=5, lam=0.7, seed=5, pixels_per_image=6)
    reg.init_from_data(dense_batches())
    reg.regularizer.prior.sigma.zero_()
    images, maps = dense_batches(seed=1)[0]
    model(images)
    term = reg.loss(maps)
    features, mu = model.body(images).detach().double(), reg.regularizer.prior.mu.double()
    labels = loop_cell_labels(maps)
    index = adarand.dense.sample_pixels(labels, 6, C, "class", seeded_generator(stream_seed(NOISE, 5, 0)))
    total, count = 0.0, 0
    for b in range(images.shape[0]):
        for cell in index[b].tolist():
            label = int(labels[b, cell])
            if label != adarand.IGNORE_INDEX:
                total += float((features[b, :, cell // GRID, cell % GRID] - mu[label]).pow(2).sum())
                count += 1
    assert 0 < count < images.shape[0] * 6  # the all-ignore image gave only ignored rows
    torch.testing.assert_close(term.double(), torch.tensor(0.7 * total / (count * D), dtype=torch.float64),
                               rtol=1e-6, atol=0)


def test_dense_loss_and_step_are_the_regularizers_on_the_drawn_rows():
    torch.manual_seed(0)
    model = DenseNet()
    reg = adarand.attach(model, "head", total_steps=5, seed=3, pixels_per_image=10, balance="uniform")
    reg.init_from_data(dense_batches())
    twin = adarand.build_regularizer("adarand", C, D, total_steps=5)
    twin.load_state_dict(reg.regularizer.state_dict())
    twin.noise_generator = generator = seeded_generator(stream_seed(NOISE, 3, 0))
    mu0 = twin.prior.mu.clone()
    for images, maps in dense_batches(seed=2):
        rng = torch.get_rng_state()
        model(images)
        term = reg.loss(maps)
        term.backward()
        reg.step()
        assert torch.equal(rng, torch.get_rng_state())  # the draws leave the global RNG (dropout, ...) alone
        features = model.body(images).detach()
        rows, _, labels, _ = adarand.dense.PixelSampling(pixels_per_image=10, balance="uniform").rows(
            features, None, maps, C, generator)
        assert torch.equal(term.detach(), twin(rows, labels))
        twin.step(rows, labels)
        for key, value in twin.state_dict().items():
            assert torch.equal(reg.regularizer.state_dict()[key], value), key
    assert (twin.prior.mu - mu0).abs().max() > 1e-4  # the prior moved


def test_dense_ptr_gets_the_drawn_cells_logits_and_the_head_weight():
    torch.manual_seed(0)
    model = DenseNet()
    reg = adarand.attach(model, "head", method="ptr", threshold=10.0, seed=4, pixels_per_image=5)
    ref = adarand.build_regularizer("ptr", C, D, threshold=10.0)
    images, maps = dense_batches()[0]
    logits = model(images)
    reg.regularizer.enabled.fill_(True), ref.enabled.fill_(True)  # past the switch-on threshold
    term = reg.loss(maps)
    ref.noise_generator = generator = seeded_generator(stream_seed(NOISE, 4, 0))  # the cells, then the targets
    rows, logit_rows, labels, _ = adarand.dense.PixelSampling(pixels_per_image=5).rows(
        model.body(images), logits, maps, C, generator)
    want = ref(rows, labels, logits=logit_rows, classifier_weight=model.head.weight.flatten(1))
    assert want > 0 and torch.equal(term, want)


def test_dense_refusals_name_the_problem():
    model = DenseNet()
    model.wide = nn.Conv2d(D, C, 3)
    model.grouped = nn.Conv2d(D, C * 2, 1, groups=2)
    with pytest.raises(TypeError, match=r"'wide' is a Conv2d with kernel_size=\(3, 3\).*per-pixel classifier"):
        adarand.attach(model, "wide")
    with pytest.raises(TypeError, match=r"'grouped' .*groups=2"):
        adarand.attach(model, "grouped")
    with pytest.raises(ValueError, match=r"no submodule 'fc'.*'body.3', 'head'"):
        adarand.attach(model, "fc")
    with pytest.raises(ValueError, match=r"\['pixels_per_image'\] apply to a dense head.*'classifier.1' is a Linear"):
        adarand.attach(Net(), "classifier.1", pixels_per_image=64)
    with pytest.raises(ValueError, match="pixels_per_image must be an int >= 1"):
        adarand.attach(model, "head", pixels_per_image=0)
    reg = adarand.attach(model, "head")
    reg.init_from_data(dense_batches())
    images, maps = dense_batches()[0]
    model(images)
    with pytest.raises(ValueError, match=r"dense head 'head' .*\(4, 8, 9, 9\).*label map.*shape \(4,\)"):
        reg.loss(maps[:, 0, 0])
    with pytest.raises(ValueError, match=r"label map .*shape \(4, 8, 33\)"):
        reg.loss(maps[:, :8])


def test_dense_loss_and_step_issue_no_host_sync():
    torch.manual_seed(0)
    model = DenseNet()
    reg = adarand.attach(model, "head", total_steps=5)
    reg.init_from_data(dense_batches())
    values_unchecked(reg)
    with SyncAudit() as audit:
        for images, maps in dense_batches(seed=2):
            model(images)
            reg.loss(maps).backward()
            reg.step()
    audit.assert_none_ours()


def test_dense_attach_on_torchvision_deeplabv3_trains_and_checkpoints_its_prior(tmp_path):
    from torchvision.models.segmentation import deeplabv3_mobilenet_v3_large

    torch.manual_seed(0)
    model = deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=3)
    g = torch.Generator().manual_seed(0)
    data = [(torch.randn(2, 3, 64, 64, generator=g), torch.randint(0, 3, (2, 64, 64), generator=g)) for _ in range(3)]
    for _, target in data:
        target[:, :4] = 255
    reg = adarand.attach(model, "classifier.4", total_steps=3, pixels_per_image=8)
    reg.init_from_data(data)
    mu0 = reg.regularizer.prior.mu.clone()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    for images, target in data:
        out = model(images)["out"]
        loss = F.cross_entropy(out, target, ignore_index=255) + reg.loss(target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        reg.step()
    assert torch.isfinite(loss) and (reg.regularizer.prior.mu - mu0).abs().max() > 1e-5
    assert int(reg.regularizer.prior.optimizer.num_steps) == 3
    torch.save(reg.state_dict(), tmp_path / "adarand.pt")
    twin = copy.deepcopy(model)
    fresh = adarand.attach(twin, "classifier.4", total_steps=3, pixels_per_image=8, seed=1)
    fresh.load_state_dict(torch.load(tmp_path / "adarand.pt", weights_only=True))
    for key, value in reg.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key
    torch.manual_seed(9)  # the same dropout masks in both forwards
    model(data[0][0])
    torch.manual_seed(9)
    twin(data[0][0])
    assert torch.equal(fresh.loss(data[0][1]), reg.loss(data[0][1]))  # the same cells and noise next


def test_the_prior_follows_the_heads_device_and_dtype_after_attach():
    """attach() before .to(...): the next loss() moves the regularizer (float64 with a float64 head, the meta device
    standing in for a second device where no GPU exists); attach() after .to("meta") builds it there."""
    torch.manual_seed(0)
    model = Net()
    reg = adarand.attach(model, "classifier.1", total_steps=5)
    reg.init_from_data(batches(), progress=False)
    model.double()
    x, y = make_data()
    model(x.double())
    term = reg.loss(y)
    assert term.dtype == torch.float64 and reg.regularizer.prior.mu.dtype == torch.float64
    term.backward()
    reg.step()
    model.to("meta")
    model(x.double().to("meta"))
    assert reg.loss(y.to("meta")).device.type == "meta" and reg.regularizer.prior.mu.device.type == "meta"
    reg.step()
    late = adarand.attach(Net().to("meta"), "classifier.1", total_steps=5)
    assert late.regularizer.prior.mu.device.type == "meta"


def test_one_regularizer_per_head_until_removed():
    model = Net()
    first = adarand.attach(model, "classifier.1", total_steps=5)
    with pytest.raises(RuntimeError, match="already has a regularizer attached; call its remove"):
        adarand.attach(model, "classifier.1", total_steps=5)
    first.remove()
    adarand.attach(model, "classifier.1", total_steps=5)  # allowed once the first is off


def test_a_sequential_head_names_its_last_linear_layer():
    with pytest.raises(TypeError, match=r"its last one is 'classifier\.1'"):
        adarand.attach(Net(), "classifier", total_steps=5)


def test_a_tuple_of_heads_is_the_class_tokens_head():
    """timm's distilled models: get_classifier() returns (head, head_dist); the class token's head is regularized."""
    model = Net()
    reg = adarand.attach(model, (model.classifier[1], model.body[3]), total_steps=5)
    assert reg.head is model.classifier[1] and reg.head_name == "classifier.1"


def test_init_from_data_reads_at_most_max_batches():
    read = []

    def counted():
        for batch in batches(48, 8):
            read.append(batch)
            yield batch

    reg = adarand.attach(Net(), "classifier.1", total_steps=5)
    stats = reg.init_from_data(counted(), progress=False, max_batches=2)
    assert len(read) == 2 and int(stats.count.sum()) == 16
    with pytest.raises(ValueError, match="max_batches must be an integer >= 1"):
        reg.init_from_data(batches(), max_batches=0)
