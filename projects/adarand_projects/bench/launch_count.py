"""What one AdaRand training step launches, phase by phase (``tools/bench/count_launches.py``, docs/kernels.md).

Eager paths, for each phase: **Triton launches** (calls of the interpreter's launcher, i.e. what
``kernel[grid](...)`` would launch on a GPU) and **aten ops that compute** (ops seen by a
``TorchDispatchMode``, less views, pure allocations, dtype queries and the ops Triton's
interpreter issues to move tensors in and out of its numpy emulation). An ``adarand::`` custom
op is not counted itself: the ops and launches it runs inside are.

Compiled path (:func:`count_compiled`): the kernels in the code inductor generates for
``reg.step`` and for the loss forward + backward (fused ``cpp_fused_*`` / ``triton_*`` kernels,
plus the calls to extern kernels such as ``mm``, each one launch).
"""
import os
import re
import sys
from collections import Counter

import torch
from torch.utils._python_dispatch import TorchDispatchMode

import adarand

from .builders import compile_regularizer, seeded_adarand

NO_KERNEL = {"empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided", "detach", "lift_fresh",
             "_local_scalar_dense", "set_", "resize_", "promote_types", "result_type"}


def _triton_dir():
    import triton

    return os.path.dirname(os.path.realpath(triton.__file__)) + os.sep


def from_triton_interpreter():
    """True when a frame of the triton package is on the stack (the interpreter copying tensors)."""
    triton_dir = _triton_dir()
    frame = sys._getframe(2)
    while frame is not None:
        if os.path.realpath(frame.f_code.co_filename).startswith(triton_dir):
            return True
        frame = frame.f_back
    return False


PHASES = ("loss forward", "loss backward", "EMA", "prior update")


def without(whole, part):
    """A phase's counts less those of a part of it (``whole`` and ``part`` as :func:`count` gives them)."""
    kernels = Counter(whole["kernels"]) - Counter(part["kernels"])
    ops = Counter(whole["ops"]) - Counter(part["ops"])
    return {"triton": sum(kernels.values()), "aten": sum(ops.values()), "kernels": dict(kernels), "ops": dict(ops)}


class OpCounter(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if func.namespace == "adarand":  # count what the custom op runs, with this mode back on
            kernel = torch._library.custom_ops._maybe_get_opdef(func)._backend_fns["cpu"]
            with self:
                return kernel(*args, **(kwargs or {}))
        if not func.is_view and name not in NO_KERNEL and not from_triton_interpreter():
            self.ops[name] += 1
        return func(*args, **(kwargs or {}))


class LaunchCounter:
    """Counts Triton kernel launches by wrapping the interpreter's launcher."""

    def __init__(self):
        self.launches = Counter()

    def __enter__(self):
        from triton.runtime.interpreter import InterpretedFunction

        self._cls, self._run = InterpretedFunction, InterpretedFunction.run
        counter = self

        def run(fn, *args, **kwargs):
            counter.launches[fn.fn.__name__] += 1
            return counter._run(fn, *args, **kwargs)

        InterpretedFunction.run = run
        return self

    def __exit__(self, *exc):
        self._cls.run = self._run


def count(backend, batch, classes, dim):
    """``{phase: {"triton": launches, "aten": computing ops, "kernels": {...}, "ops": {...}}}`` of one
    AdaRand step (B = ``batch``, C = ``classes``, D = ``dim``) on ``backend`` ("triton" needs
    TRITON_INTERPRET=1 on a CPU); phases: :data:`PHASES` and the whole ``step()``."""
    adarand.set_backend(backend)
    reg = seeded_adarand(classes, dim)
    features = torch.randn(batch, dim, requires_grad=True)
    labels = torch.randint(0, classes, (batch,))
    prior = reg.prior
    phases = {}

    def measure(name, fn):
        with LaunchCounter() as launches, OpCounter() as ops:
            out = fn()
        phases[name] = {"triton": sum(launches.launches.values()), "aten": sum(ops.ops.values()),
                        "kernels": dict(launches.launches), "ops": dict(ops.ops)}
        return out

    loss = measure("loss forward", lambda: reg(features, labels))
    measure("loss backward", lambda: loss.backward())
    # AdaRand.step = input checks + prior.adapt (EMA, then the prior update and the skip counter): the EMA
    # alone, the prior's whole adaptation, then step() whole; "prior update" is what adapt adds to the EMA.
    measure("EMA", lambda: prior.update_running_mean(features.detach(), labels))
    measure("prior.adapt", lambda: prior.adapt(features.detach(), labels))
    phases["prior update"] = without(phases["prior.adapt"], phases["EMA"])
    measure("whole step()", lambda: reg.step(features.detach(), labels))
    adarand.set_backend(None)
    return phases


def training_step_total(phases):
    """Triton launches and aten ops of one training step in all (loss forward + backward + ``step()``), from
    :func:`count`'s phases."""
    return sum(phases[p]["triton"] + phases[p]["aten"] for p in ("loss forward", "loss backward", "whole step()"))


def generated_kernels(code):
    """``(kernels, externs)``: the kernels a piece of inductor output code launches, and its extern calls."""
    body = code[code.index("def call("):] if "def call(" in code else code
    kernels = re.findall(r"^\s+(cpp_fused_\w+|triton_\w+)(?:\.run)?\(", body, re.M)
    externs = re.findall(r"(extern_kernels\.\w+|torch\.ops\.\w+\.\w+)(?:\.default)?\(", body)
    return kernels, externs


def count_compiled(batch, classes, dim):
    """``{"step": {...}, "loss forward + backward": {...}}``, each ``{"kernels": n, "externs": n, "names": [...]}``:
    what inductor generates for AdaRand's compiled ``reg.step`` and loss (the PyTorch path, CPU tensors)."""
    from torch._inductor.utils import run_and_get_code

    adarand.set_backend("torch")
    try:
        reg = seeded_adarand(classes, dim)
        features = torch.randn(batch, dim, requires_grad=True)
        labels = torch.randint(0, classes, (batch,))
        forward, step = compile_regularizer(reg)
        result = {}
        for phase, fn in (("loss forward + backward", lambda: forward(features, labels).backward()),
                          ("step", lambda: step(features.detach(), labels))):
            _, codes = run_and_get_code(fn)
            kernels, externs = [], []
            for code in codes:
                k, e = generated_kernels(code)
                kernels += k
                externs += e
            result[phase] = {"kernels": len(kernels), "externs": len(externs), "names": kernels + externs}
        return result
    finally:
        adarand.set_backend(None)
