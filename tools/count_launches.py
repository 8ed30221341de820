#!/usr/bin/env python
"""Count what one AdaRand training step launches, phase by phase, on both prior paths.

    TRITON_INTERPRET=1 python tools/count_launches.py [--batch 64 --classes 196 --dim 2048]

Runs one regularizer step on CPU tensors: loss forward, loss backward, running-mean EMA,
prior update (prior loss forward + backward, Adam). For each phase it counts

- **Triton launches**: calls of the interpreter's launcher (``InterpretedFunction.run``),
  i.e. what ``kernel[grid](...)`` would launch on a GPU;
- **aten ops that compute**: every op seen by a ``TorchDispatchMode``, less views,
  pure allocations (``empty*``) and dtype queries, which launch no kernel, and less the
  ops Triton's interpreter itself issues to move tensors in and out of its numpy
  emulation (absent on a GPU). On CUDA each counted op is one kernel launch or more (a
  reduction may take two).

The fused path is ``ADARAND_BACKEND=triton`` under the interpreter; the eager path is
``torch``. Prints a Markdown table and one JSON line (last).
"""
import argparse
import json
import os
import sys
from collections import Counter

os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported

import torch  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

import adarand  # noqa: E402

NO_KERNEL = {"empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided", "detach", "lift_fresh",
             "_local_scalar_dense", "set_", "resize_", "promote_types", "result_type"}
TRITON_DIR = os.path.dirname(os.path.realpath(__import__("triton").__file__)) + os.sep


def from_triton_interpreter():
    """True when a frame of the triton package is on the stack (the interpreter copying tensors)."""
    frame = sys._getframe(2)
    while frame is not None:
        if os.path.realpath(frame.f_code.co_filename).startswith(TRITON_DIR):
            return True
        frame = frame.f_back
    return False
PHASES = ("loss forward", "loss backward", "EMA", "prior update")


class OpCounter(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
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
    adarand.set_backend(backend)
    reg = adarand.build_regularizer("adarand", classes, dim, total_steps=100, check_values=False)
    reg.prior.init_from_stats(torch.randn(classes, dim), torch.ones(classes, dim))
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

    def prior_update():
        with torch.enable_grad():
            mu = prior.mu.detach().requires_grad_(True)
            prior_loss = prior.prior_loss(reg.use_mean, reg.use_dist, mu=mu)
            (grad,) = torch.autograd.grad(prior_loss, mu)
        reg.prior_optimizer.step(prior.mu, grad)

    # AdaRand.step = input checks + EMA + prior update + the skip guard; measured in parts, then whole.
    measure("EMA", lambda: prior.update_running_mean(features.detach(), labels))
    measure("prior update", prior_update)
    measure("whole step()", lambda: reg.step(features.detach(), labels))
    adarand.set_backend(None)
    return phases


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--classes", type=int, default=196)
    parser.add_argument("--dim", type=int, default=2048)
    args = parser.parse_args(argv)
    result = {path: count(backend, args.batch, args.classes, args.dim)
              for path, backend in (("fused", "triton"), ("eager", "torch"))}
    print(f"B={args.batch}, C={args.classes}, D={args.dim}\n")
    print("| phase | fused: Triton launches | fused: aten ops | eager: aten ops |")
    print("|---|---|---|---|")
    for phase in (*PHASES, "whole step()"):
        fused, eager = result["fused"][phase], result["eager"][phase]
        print(f"| {phase} | {fused['triton']} | {fused['aten']} | {eager['aten']} |")
    for path in result:
        for phase, counts in result[path].items():
            print(f"{path} / {phase}: kernels {counts['kernels']}; ops {counts['ops']}", file=sys.stderr)
    print(json.dumps({path: {phase: {"triton": c["triton"], "aten": c["aten"]} for phase, c in phases.items()}
                      for path, phases in result.items()}))


if __name__ == "__main__":
    main()
