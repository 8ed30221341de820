"""L2-SP, DELTA and BSS against float64 references written from their equations (explicit loops
over channels), DELTA's hooks living for one forward pass, and the baselines' registry."""
import copy
import math
import weakref

import pytest
import torch
from torch import nn

from adarand.classification import baselines
from adarand.classification.backbones import build_classifier
from adarand.classification.baselines import (BSS, DELTA, L2SP, attention_weights, available_baselines,
                                              baseline_options, build_baseline, channel_loss_increase,
                                              fit_linear_head)


class TwoLayer(nn.Module):
    """The ImageClassifier interface on a tiny MLP (pre-trained part = backbone)."""

    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3))
        self.head = nn.Linear(3, 2)

    def features(self, x):
        return self.backbone(x)


class TinyConv(nn.Module):
    """A conv backbone (channels on dim 1) with a head: layers "0" (3 ch.) and "2" (4 ch.)."""

    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.Tanh(), nn.Conv2d(3, 4, 3, stride=2, padding=1),
                                      nn.Tanh(), nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        self.head = nn.Linear(4, 3)

    def features(self, x):
        return self.backbone(x)


def _perturb(model, scale=0.1):
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn_like(p))


def _start_and_perturbed_model():
    """(the model's starting backbone values, the model after a perturbation of every parameter)."""
    torch.manual_seed(0)
    model = TwoLayer().double()
    start = {n: p.detach().clone() for n, p in model.named_parameters() if n.startswith("backbone")}
    return start, model


# ---------------------------------------------------------------- L2-SP

def test_l2sp_matches_reference_value_and_grad():
    start, model = _start_and_perturbed_model()
    l2sp = L2SP(model, alpha=0.3, beta=0.7)  # snapshot of the starting weights
    _perturb(model)
    loss = l2sp()
    ref = 0.5 * 0.3 * sum(((p - start[n]) ** 2).sum() for n, p in model.named_parameters() if n in start)
    ref = ref + 0.5 * 0.7 * (model.head.weight.pow(2).sum() + model.head.bias.pow(2).sum())
    torch.testing.assert_close(loss, ref)
    loss.backward()
    w = model.backbone[0].weight
    torch.testing.assert_close(w.grad, 0.3 * (w - start["backbone.0.weight"]))
    torch.testing.assert_close(model.head.weight.grad, 0.7 * model.head.weight)


def test_l2sp_is_zero_at_the_start_without_head_term():
    torch.manual_seed(0)
    model = TwoLayer().double()
    assert L2SP(model, alpha=1.0, beta=0.0)().item() == 0.0


def test_l2sp_snapshot_is_a_frozen_copy_keyed_like_named_parameters():
    model = build_classifier("tiny_cnn", 3)
    l2sp = L2SP(model)
    start = l2sp.starting_point()
    params = dict(model.named_parameters())
    assert set(start) == {n for n in params if n.startswith("backbone.")}
    assert all(torch.equal(start[n], params[n]) and start[n].data_ptr() != params[n].data_ptr() for n in start)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    assert all(torch.allclose(start[n] + 1.0, params[n]) for n in start)


def _tensor_storages(module):
    """data_ptr of every tensor a module tree holds: parameters, buffers and any tensor kept in an
    attribute (also inside dicts, lists, tuples)."""
    found = set()

    def visit(value):
        if torch.is_tensor(value):
            found.add(value.data_ptr())
        elif isinstance(value, dict):
            for v in value.values():
                visit(v)
        elif isinstance(value, (list, tuple)):
            for v in value:
                visit(v)

    for m in module.modules():
        for key, value in vars(m).items():
            if key != "_modules":
                visit(value)
    return found


def test_classifier_built_without_l2sp_holds_no_snapshot():
    model = build_classifier("tiny_cnn", 3)
    own = {t.data_ptr() for t in list(model.parameters()) + list(model.buffers())}
    assert _tensor_storages(model) == own  # no hidden copy of the starting weights
    assert all(k.startswith(("backbone.", "head.")) for k in model.state_dict())
    l2sp = L2SP(model)  # the copy exists once, in the baseline
    copies = {t.data_ptr() for t in l2sp.buffers()}
    assert len(copies) == len(list(model.backbone.parameters())) and not copies & own
    assert _tensor_storages(model) == own


# ---------------------------------------------------------------- DELTA

def test_delta_penultimate_and_hooked_layers():
    _, model = _start_and_perturbed_model()
    x = torch.randn(6, 5, dtype=torch.float64)
    delta = DELTA(model, alpha=0.2, beta=0.0, attention="none", scale="mean")  # copies the backbone as the reference
    with torch.no_grad():
        model.backbone[2].weight.add_(0.5)
    with delta.watch(x):
        features = model.features(x)
    ref_features = delta.frozen(x)
    expected = 0.2 * ((features - ref_features) ** 2).sum(1).mean()
    torch.testing.assert_close(delta(features), expected)
    hooked = DELTA(model, alpha=0.2, beta=0.0, layers=["0", "2"], attention="none", scale="mean")
    with torch.no_grad():
        model.backbone[0].bias.add_(0.3)
    with hooked.watch(x):
        features = model.features(x)
    live0, ref0 = model.backbone[0](x), hooked.frozen[0](x)
    expected = 0.2 * (((live0 - ref0) ** 2).sum(1).mean() + ((features - hooked.frozen(x)) ** 2).sum(1).mean())
    torch.testing.assert_close(hooked(features), expected)


def _reference_forward(backbone, head, x, zero=None):
    """Logits of the Sequential ``backbone`` + ``head``, run module by module; ``zero = (index, c)``
    sets channel c of module ``index``'s output to 0."""
    h = x
    for i, module in enumerate(backbone):
        h = module(h)
        if zero is not None and zero[0] == i:
            h = torch.cat([h[:, :zero[1]], torch.zeros_like(h[:, zero[1]:zero[1] + 1]), h[:, zero[1] + 1:]], dim=1)
    return head(h)


def _reference_ce(logits, labels):
    """Mean over samples of ``-log(exp(z_y) / sum_k exp(z_k))``, one sample at a time."""
    total = 0.0
    for z, y in zip(logits.tolist(), labels.tolist()):
        total += -(z[y] - math.log(sum(math.exp(v) for v in z)))
    return total / len(labels)


def _conv_problem():
    torch.manual_seed(1)
    model = TinyConv().double()
    x = torch.randn(7, 2, 6, 6, dtype=torch.float64)
    y = torch.randint(0, 3, (7,))
    return model, x, y


def test_channel_loss_increase_matches_explicit_loops():
    model, x, y = _conv_problem()
    batches = [(x[:4], y[:4]), (x[4:], y[4:])]  # the mean runs over images, across batches
    with torch.no_grad():
        increase = channel_loss_increase(model.backbone, model.head, ["0", "2", ""], batches)
        base = _reference_ce(_reference_forward(model.backbone, model.head, x), y)
        for j, (index, channels) in enumerate([(0, 3), (2, 4), (5, 4)]):  # "" = the backbone's output (module 5)
            assert increase[j].dtype == torch.float64 and increase[j].shape == (channels,)
            for c in range(channels):
                zeroed = _reference_ce(_reference_forward(model.backbone, model.head, x, (index, c)), y)
                assert increase[j][c].item() == pytest.approx(zeroed - base, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("mode", ["supervised", "supervised-standardized", "none"])
def test_attention_weights_match_explicit_loops(mode):
    increase = torch.tensor([0.3, -0.1, 1.2, 0.05, 0.0], dtype=torch.float64)
    values = increase.tolist()
    n = len(values)
    if mode == "supervised":
        scores = values
    elif mode == "supervised-standardized":
        mean = sum(values) / n
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / n)
        scores = [(v - mean) / std / 5.0 for v in values]
    if mode == "none":
        expected = [1.0] * n
    else:
        norm = sum(math.exp(s) for s in scores)
        expected = [n * math.exp(s) / norm for s in scores]
    weights = attention_weights(increase, mode)
    assert weights.tolist() == pytest.approx(expected, rel=1e-12)
    assert weights.sum().item() == pytest.approx(n)  # mean weight 1: alpha keeps its scale
    if mode != "none":
        assert weights.argmax().item() == 2  # the channel whose removal costs most weighs most


def test_fit_linear_head_is_the_regularised_minimiser():
    torch.manual_seed(0)
    features = torch.randn(40, 6, dtype=torch.float64)
    labels = torch.randint(0, 3, (40,))
    head = fit_linear_head(features, labels, 3, weight_decay=1e-2)
    w = head.weight.detach().clone().requires_grad_(True)
    b = head.bias.detach().clone().requires_grad_(True)
    objective = nn.functional.cross_entropy(features @ w.T + b, labels) + 0.5 * 1e-2 * w.pow(2).sum()
    gw, gb = torch.autograd.grad(objective, (w, b))
    assert gw.abs().max() < 1e-5 and gb.abs().max() < 1e-5  # stationary point of a strictly convex objective
    assert objective.item() < math.log(3)  # better than the zero head it starts from


def _reference_delta(model, frozen_backbone, x, weights, alpha, scale):
    """With explicit loops over layers "0", "2", channels and images (s: the H x W positions):
    scale "delta" (DELTA's code): ``alpha * sum_j 0.5 * sum_i sum_c W_jc sum_s (FM_jcs(w) - FM_jcs(w0))^2 / (H_j W_j)``;
    scale "mean": ``alpha * mean_i sum_j sum_c W_jc sum_s (...)^2``."""
    total = 0.0
    for index, w in zip((0, 2), weights):
        live = model.backbone[:index + 1](x)
        ref = frozen_backbone[:index + 1](x).detach()
        positions = live.shape[2] * live.shape[3]
        for i in range(live.shape[0]):
            for c in range(live.shape[1]):
                term = w[c] * ((live[i, c] - ref[i, c]) ** 2).sum()
                total = total + (0.5 * term / positions if scale == "delta" else term / live.shape[0])
    return alpha * total


@pytest.mark.parametrize("scale", ["delta", "mean"])
def test_delta_with_attention_matches_reference_value_and_grad(scale):
    model, x, y = _conv_problem()
    delta = DELTA(model, alpha=0.3, beta=0.5, layers=["0", "2"], attention="supervised", scale=scale)
    weights = [torch.tensor([0.5, 2.0, 0.5], dtype=torch.float64), torch.tensor([1.0, 0.2, 1.8, 1.0], dtype=torch.float64)]
    delta.attention_0, delta.attention_1 = weights
    _perturb(model, 0.2)
    with delta.watch(x):
        features = model.features(x)
    loss = delta(features)
    ref = _reference_delta(model, delta.frozen, x, weights, 0.3, scale)
    ref = ref + 0.5 * 0.5 * (model.head.weight.pow(2).sum() + model.head.bias.pow(2).sum())
    torch.testing.assert_close(loss, ref)
    params = [model.backbone[0].weight, model.backbone[2].bias, model.head.weight]
    grads = torch.autograd.grad(loss, params)
    ref_grads = torch.autograd.grad(ref, params)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r)
    assert all(p.grad is None for p in delta.frozen.parameters())  # the reference network gets no gradient


def test_delta_default_scale_is_deltas_code():
    """0.5 x the sum over the batch, each layer's squared distance over its H x W positions."""
    model, x, y = _conv_problem()
    delta = DELTA(model, alpha=0.3, beta=0.0, layers=["0", "2"], attention="none")
    assert delta.scale == "delta"
    _perturb(model, 0.2)
    with delta.watch(x):
        features = model.features(x)
    ones = [torch.ones(3, dtype=torch.float64), torch.ones(4, dtype=torch.float64)]
    torch.testing.assert_close(delta(features), _reference_delta(model, delta.frozen, x, ones, 0.3, "delta"))


def test_delta_supervised_mode_is_the_delta_papers_equation():
    model, x, y = _conv_problem()
    delta = DELTA(model, alpha=1.0, beta=0.0, layers=["0", "2"], attention="supervised")
    assert delta.needs_data
    fit, probe = [(x[:4], y[:4]), (x[4:], y[4:])], [(x[:5], y[:5])]
    delta.init_from_data(fit, probe)
    with torch.no_grad():
        head = fit_linear_head(model.features(x), y, 3)  # the model is still at its starting point
        base = _reference_ce(_reference_forward(model.backbone, head, x[:5]), y[:5])
        for j, index in enumerate((0, 2)):
            increase = [_reference_ce(_reference_forward(model.backbone, head, x[:5], (index, c)), y[:5]) - base
                        for c in range(getattr(delta, f"attention_{j}").shape[0])]
            norm = sum(math.exp(v) for v in increase)
            expected = [len(increase) * math.exp(v) / norm for v in increase]
            assert getattr(delta, f"attention_{j}").tolist() == pytest.approx(expected, rel=1e-5)


class OneChannelMatters(nn.Module):
    """A ResNet-shaped toy whose last block's conv3 has 4 channels; only channel 2 carries the label."""

    def __init__(self):
        super().__init__()
        block = nn.Module()
        block.conv3 = nn.Conv2d(2, 4, 1, bias=False)
        with torch.no_grad():
            block.conv3.weight.copy_(0.05 * torch.randn(4, 2, 1, 1))
            block.conv3.weight[2] = torch.tensor([3.0, 0.0]).view(2, 1, 1)  # channel 2 copies input channel 0
        self.block = block
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))

    def forward(self, x):
        return self.pool(self.block.conv3(x))


def _reference_deltas_attention(backbone, head, batches):
    """DELTA's code, from its equations: per batch, the increase of the batch-mean CE when filter c's
    weights are set to 0, averaged over batches; per layer z = (d - mean d) / std d (population std),
    W = C * softmax(z / 5). Float64, explicit loops, the weights edited in a copy."""
    net = copy.deepcopy(backbone)
    weight = net.block.conv3.weight
    channels = weight.shape[0]
    increase = [0.0] * channels
    for images, labels in batches:
        with torch.no_grad():
            base = _reference_ce(head(net(images)), labels)
            for c in range(channels):
                kept = weight[c].clone()
                weight[c] = 0.0
                increase[c] += (_reference_ce(head(net(images)), labels) - base) / len(batches)
                weight[c] = kept
    mean = sum(increase) / channels
    std = math.sqrt(sum((d - mean) ** 2 for d in increase) / channels)
    scores = [math.exp((d - mean) / std / 5.0) for d in increase]
    return [channels * e / sum(scores) for e in scores]


def test_delta_default_attention_is_deltas_code_on_a_toy_network_where_one_channel_matters():
    torch.manual_seed(3)
    model = TwoLayer()  # only the interface: backbone and head are replaced
    model.backbone, model.head = OneChannelMatters().double(), nn.Linear(4, 2).double()
    x = torch.randn(32, 2, 3, 3, dtype=torch.float64)
    y = (x[:, 0].mean((1, 2)) > 0).long()
    delta = DELTA(model, layers=["block.conv3"])  # every other option at its default
    assert delta.attention == "supervised-standardized"
    probe = [(x[:16], y[:16]), (x[16:], y[16:])]  # equal batches: the mean over batches is the mean over images
    delta.init_from_data([(x, y)], probe)
    with torch.no_grad():
        head = fit_linear_head(model.features(x), y, 2)
    expected = _reference_deltas_attention(model.backbone, head, probe)
    weights = delta.attention_0
    assert weights.tolist() == pytest.approx(expected, rel=1e-5)
    # visibly non-uniform: the channel that matters weighs about 1.6 x the others (z = sqrt 3 at most over 4)
    assert weights.argmax().item() == 2 and weights[2] > 1.5 * weights[[0, 1, 3]].max()
    assert weights.sum().item() == pytest.approx(4.0)


def test_delta_default_layers_are_the_last_blocks_last_conv_of_each_resnet_stage():
    from torchvision import models

    assert baselines.delta_layers(models.resnet50()) == ["layer1.2.conv3", "layer2.3.conv3", "layer3.5.conv3",
                                                         "layer4.2.conv3"]  # DELTA's code's hook_layers
    assert baselines.delta_layers(models.resnet18()) == ["layer1.1.conv2", "layer2.1.conv2", "layer3.1.conv2",
                                                         "layer4.1.conv2"]
    model = build_classifier("resnet18", 3)
    assert DELTA(model).layers == ["layer1.1.conv2", "layer2.1.conv2", "layer3.1.conv2", "layer4.1.conv2"]
    assert DELTA(build_classifier("tiny_cnn", 3)).layers == [""]  # no ResNet stages: the penultimate features


def _hook_counts(*modules):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for root in modules for m in root.modules())


def test_delta_hooks_live_for_one_forward_only():
    model = build_classifier("tiny_cnn", 3)
    delta = DELTA(model, layers=["2", "5"], attention="none")
    x = torch.randn(4, 3, 8, 8)
    assert _hook_counts(model, delta) == 0
    seen = []
    with delta.watch(x):
        assert _hook_counts(model) == 2 and _hook_counts(delta.frozen) == 0
        model.backbone[2].register_forward_hook(lambda m, i, out: seen.append(weakref.ref(out)))
        features, logits = model.forward_features(x)
    model.backbone[2]._forward_hooks.clear()  # the test's own probe
    assert _hook_counts(model, delta) == 0
    loss = delta(features)
    assert delta._maps is None  # handed over to the loss, not kept
    loss.backward()
    del loss, features, logits
    assert seen[0]() is None  # the captured layer output is freed with the graph
    model.eval()
    with torch.no_grad():
        model(x)  # evaluation: no hook, nothing captured
    assert delta._maps is None
    with pytest.raises(RuntimeError, match="watch"):
        delta(model.features(x))


def test_delta_watch_removes_hooks_when_the_forward_fails():
    model = build_classifier("tiny_cnn", 3)
    delta = DELTA(model, layers=["2"], attention="none")
    with pytest.raises(RuntimeError, match="boom"):
        with delta.watch(torch.randn(2, 3, 8, 8)):
            raise RuntimeError("boom")
    assert _hook_counts(model, delta) == 0 and delta._maps is None


def test_delta_errors():
    model = build_classifier("tiny_cnn", 3)
    with pytest.raises(KeyError, match="DELTA_LAYERS"):
        DELTA(model, layers=["nope"])
    with pytest.raises(ValueError, match="attention"):
        DELTA(model, attention="unsupervised")
    delta = DELTA(model, layers=["2"])
    x = torch.randn(2, 3, 8, 8)
    with delta.watch(x):
        features = model.features(x)
    with pytest.raises(RuntimeError, match="init_from_data"):
        delta(features)


class TinyConvBN(TinyConv):
    """TinyConv with a BatchNorm after its first convolution (modules "0" conv, "1" BN, "3" conv)."""

    def __init__(self):
        super().__init__()
        self.backbone.insert(1, nn.BatchNorm2d(3))


def _with_bn_statistics(backbone, batches):
    """A copy of ``backbone`` whose BN holds, from its equations, the mean over ``batches`` of each
    batch's per-channel mean and unbiased variance of the BN's input (one BN, after module 0)."""
    net = copy.deepcopy(backbone)
    means, variances = [], []
    with torch.no_grad():
        for images, _ in batches:
            h = net[0](images).transpose(0, 1).flatten(1)  # channels x (N H W)
            means.append(h.mean(1))
            variances.append(h.var(1, unbiased=True))
        net[1].running_mean.copy_(torch.stack(means).mean(0))
        net[1].running_var.copy_(torch.stack(variances).mean(0))
    return net.eval()


def test_delta_attention_uses_the_target_datas_bn_statistics_by_default():
    """DELTA's code fits its probe head with the network in train mode, so the BN running statistics
    follow the target data before the loss increases are measured; BASELINE.DELTA_ATTENTION_BN
    pretrained keeps the starting network's. The reference network w^0 and the model keep theirs."""
    torch.manual_seed(4)
    model = TinyConvBN().double().eval()
    x = 3.0 + 2.0 * torch.randn(12, 2, 6, 6, dtype=torch.float64)  # far from the BN's (0, 1) statistics
    y = torch.randint(0, 3, (12,))
    fit, probe = [(x[:5], y[:5]), (x[5:11], y[5:11]), (x[11:], y[11:])], [(x[:6], y[:6])]  # one 1-image batch
    start = {k: v.clone() for k, v in model.backbone.state_dict().items()}

    def expected(backbone):
        with torch.no_grad():
            head = fit_linear_head(backbone(x), y, 3)
            base = _reference_ce(_reference_forward(backbone, head, x[:6]), y[:6])
            return [[_reference_ce(_reference_forward(backbone, head, x[:6], (index, c)), y[:6]) - base
                     for c in range(channels)] for index, channels in ((0, 3), (3, 4))]

    default = DELTA(model, layers=["0", "3"], attention="supervised")
    assert default.bn_stats == "target"
    default.init_from_data(fit, probe)
    pretrained = DELTA(model, layers=["0", "3"], attention="supervised", bn_stats="pretrained")
    pretrained.init_from_data(fit, probe)
    target_net = _with_bn_statistics(model.backbone, fit[:2])  # the 1-image batch has no batch statistics
    for j, (target, kept) in enumerate(zip(expected(target_net), expected(model.backbone))):
        got, got_kept = getattr(default, f"attention_{j}"), getattr(pretrained, f"attention_{j}")
        assert got.tolist() == pytest.approx(attention_weights(torch.tensor(target), "supervised").tolist(), rel=1e-5)
        assert got_kept.tolist() == pytest.approx(attention_weights(torch.tensor(kept), "supervised").tolist(),
                                                  rel=1e-5)
    assert not torch.allclose(default.attention_0, pretrained.attention_0, rtol=1e-3)
    for net in (model.backbone, default.frozen):
        assert all(torch.equal(v, start[k]) for k, v in net.state_dict().items())


def test_delta_target_bn_statistics_need_a_batch_of_two_images():
    model = TinyConvBN().double()
    x, y = torch.randn(2, 2, 6, 6, dtype=torch.float64), torch.tensor([0, 1])
    delta = DELTA(model, layers=["0"])
    with pytest.raises(ValueError, match="BASELINE.DELTA_ATTENTION_BN"):
        delta.init_from_data([(x[:1], y[:1]), (x[1:], y[1:])], [(x, y)])
    with pytest.raises(ValueError, match="bn_stats"):
        DELTA(model, bn_stats="frozen")


def test_delta_frozen_reference_stays_in_eval_mode():
    model = build_classifier("tiny_cnn", 3)
    delta = DELTA(model, attention="none").train()
    assert not delta.frozen.training and all(not m.training for m in delta.frozen.modules())
    assert not any(p.requires_grad for p in delta.frozen.parameters())


# ---------------------------------------------------------------- BSS

def test_bss_smallest_singular_values_value_and_grad():
    torch.manual_seed(0)
    features = torch.randn(8, 5, dtype=torch.float64, requires_grad=True)
    loss = BSS(eta=0.5, k=2)(features)
    eig, vec = torch.linalg.eigh(features.detach().T @ features.detach())  # ascending = s^2, right singular vectors
    torch.testing.assert_close(loss, 0.5 * eig[:2].sum())
    loss.backward()
    f = features.detach()
    expected = sum(0.5 * 2.0 * f @ vec[:, i:i + 1] @ vec[:, i:i + 1].T for i in range(2))  # d s_i^2 / dF = 2 F v_i v_i^T
    torch.testing.assert_close(features.grad, expected)


def test_bss_rejects_bad_k():
    with pytest.raises(ValueError, match="k"):
        BSS(k=0)


# ---------------------------------------------------------------- registry

def test_registry_builds_every_baseline_with_checked_options():
    model = build_classifier("tiny_cnn", 3)
    assert available_baselines() == ["l2sp", "delta", "bss"]
    assert baseline_options("bss") == {"eta": 0.001, "k": 1}
    assert set(baseline_options("delta")) == {"alpha", "beta", "layers", "attention", "scale", "bn_stats"}
    assert isinstance(build_baseline("l2sp", model, alpha=0.1), L2SP)
    assert isinstance(build_baseline("delta", model, layers=["2"], attention="none"), DELTA)
    assert build_baseline("bss", model, k=2).k == 2
    with pytest.raises(ValueError, match="does not take"):
        build_baseline("bss", model, alpha=0.1)
    with pytest.raises(ValueError, match="unknown baseline"):
        build_baseline("lwf", model)
    with pytest.raises(ValueError, match="alpha"):
        build_baseline("l2sp", model, alpha=-1.0)
    assert all(isinstance(build_baseline(n, model), baselines.Baseline) for n in available_baselines())


def test_config_keys_map_to_options():
    from adarand.classification import build
    from adarand.classification.config import load_cfg

    model = build_classifier("tiny_cnn", 3)
    cfg = load_cfg("", ["BASELINE.METHOD", "delta", "BASELINE.ALPHA", "0.2", "BASELINE.DELTA_LAYERS", "['2', '5']",
                        "BASELINE.DELTA_ATTENTION", "supervised", "BASELINE.DELTA_SCALE", "mean",
                        "BASELINE.DELTA_ATTENTION_BN", "pretrained"])
    delta = build.build_baseline(cfg, model)
    assert (delta.alpha, delta.layers, delta.attention, delta.scale, delta.bn_stats) == (
        0.2, ["2", "5"], "supervised", "mean", "pretrained")
    default = build.build_baseline(load_cfg("", ["BASELINE.METHOD", "delta"]), model)
    assert (default.attention, default.scale, default.bn_stats) == ("supervised-standardized", "delta", "target")
    with pytest.raises(ValueError, match="BASELINE.DELTA_ATTENTION_BN"):
        load_cfg("", ["BASELINE.DELTA_ATTENTION_BN", "frozen"])
    assert build.build_baseline(load_cfg("", []), model) is None
    with pytest.raises(ValueError, match="BASELINE.DELTA_ATTENTION"):
        load_cfg("", ["BASELINE.DELTA_ATTENTION", "learned"])
    with pytest.raises(ValueError, match="BASELINE.DELTA_SCALE"):
        load_cfg("", ["BASELINE.DELTA_SCALE", "sum"])
