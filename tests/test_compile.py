"""Every regularizer's forward and step trace whole with torch.compile(fullgraph=True) and equal eager.

The CPU (PyTorch) path, tiny shapes. Tracing is checked for every method with the
``aot_eager`` backend (Dynamo + AOTAutograd, no code generation: fast), and every method also
runs through the default backend's (inductor's) generated code; AdaRand's step, the one that
matters for speed, within its launch budget.
"""
import pytest
import torch

import adarand
from adarand import ClassStats, available_regularizers, build_regularizer

pytestmark = pytest.mark.slow

C, D, B, STEPS = 3, 16, 6, 3  # D >= 8: inductor vectorizes its CPU loops (where adarand-no-dist once failed)


def _stats():
    g = torch.Generator().manual_seed(0)
    mean, std = torch.randn(C, D, generator=g), torch.rand(C, D, generator=g) + 0.1
    return ClassStats(mean=mean, std=std, count=torch.full((C,), 4), global_mean=mean.mean(0), global_std=std.mean(0))


def _build(name):
    reg = build_regularizer(name, C, D, check_values=False, **({"total_steps": 10} if "adarand" in name else {}))
    if reg.needs_stats:
        reg.init_from_stats(_stats())
    if name == "ptr":
        reg.enabled.fill_(True)  # PtR's term is off until its CE threshold is met
    return reg


def _run(reg, forward, step):
    """STEPS training steps of the regularizer alone: loss, its gradient, step(); returns all outputs."""
    g = torch.Generator().manual_seed(1)
    outputs = []
    for k in range(STEPS):
        features = torch.randn(B, D, generator=g).requires_grad_(True)
        labels = torch.randint(0, C, (B,), generator=g)
        labels[0] = adarand.IGNORE_INDEX
        logits, weight = torch.randn(B, C, generator=g), torch.randn(C, D, generator=g)
        torch.manual_seed(100 + k)  # the noise of the torch path
        loss = forward(features, labels, logits, weight)
        grad = torch.autograd.grad(loss, features)[0] if loss.requires_grad else torch.zeros_like(features)
        prior_loss = step(features.detach(), labels)
        outputs += [loss.detach(), grad] + ([prior_loss] if prior_loss is not None else [])
    return outputs + [t.clone() for t in reg.state_dict().values()]


def _compare(name, backend, record=None):
    """Eager vs compiled over STEPS steps; ``record``: a dict that receives the generated code of the first step."""
    eager, compiled = _build(name), _build(name)
    expected = _run(eager, eager.forward, eager.step)
    torch._dynamo.reset()
    step = torch.compile(compiled.step, fullgraph=True, backend=backend)

    def recording_step(features, labels):
        if record is None or "step" in record:
            return step(features, labels)
        from torch._inductor.utils import run_and_get_code

        out, record["step"] = run_and_get_code(step, features, labels)
        return out

    got = _run(compiled, torch.compile(compiled.forward, fullgraph=True, backend=backend), recording_step)
    assert len(got) == len(expected)
    for ours, ref in zip(got, expected):
        torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", available_regularizers())
def test_forward_and_step_trace_whole_and_equal_eager(name, torch_backend):
    _compare(name, "aot_eager")


@pytest.mark.parametrize("name", available_regularizers())
def test_forward_and_step_compile_with_inductor_and_equal_eager(name, torch_backend):
    """The default backend; AdaRand's compiled step stays within its launch budget: at most 8 generated kernels
    and extern calls."""
    from adarand_projects.bench.launch_count import generated_kernels

    record = {} if name == "adarand" else None
    # torch's RNG stream, as eager draws it; config.patch restores the option (monkeypatch would delete it)
    with torch._inductor.config.patch(fallback_random=True):
        _compare(name, "inductor", record)
    if record is not None:
        launches = [name for code in record["step"] for part in generated_kernels(code) for name in part]
        assert 0 < len(launches) <= 8, launches


def test_compiled_model_keeps_the_fused_kernels_without_graph_breaks():
    """With the Triton backend every fused kernel is a custom op: a model's forward with the
    regularizer inside, and ``reg.step``, each trace as one graph holding the ops."""
    reg = _build("adarand")
    backbone, head = torch.nn.Linear(4, D), torch.nn.Linear(D, C)
    images, labels = torch.randn(B, 4), torch.randint(0, C, (B,))

    def training_loss(images, labels):
        features = backbone(images)
        return torch.nn.functional.cross_entropy(head(features), labels) + reg(features, labels)

    adarand.set_backend("triton")
    try:
        explanations = [torch._dynamo.explain(training_loss)(images, labels),
                        torch._dynamo.explain(reg.step)(torch.randn(B, D), labels)]
    finally:
        adarand.set_backend(None)
    expected = [{"adarand.target_loss_fwd"}, {"adarand.class_sums", "adarand.ema_apply_", "adarand.prior_step_"}]
    for explanation, ops in zip(explanations, expected):
        assert explanation.graph_break_count == 0 and explanation.graph_count == 1
        targets = {str(node.target) for graph in explanation.graphs for node in graph.graph.nodes}
        assert all(any(op in target for target in targets) for op in ops), targets
