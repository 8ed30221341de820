#!/usr/bin/env python
"""Count what one AdaRand training step launches, phase by phase, on both prior paths.

    TRITON_INTERPRET=1 python tools/bench/count_launches.py [--batch 64 --classes 196 --dim 2048]

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
``torch``. The compiled path (``torch.compile(fullgraph=True)`` of the PyTorch path, inductor)
counts the kernels in inductor's generated code: fused ``cpp_fused_*`` kernels on a CPU
(``triton_*`` on a GPU) plus calls to extern kernels (``mm``), one launch each.
``--no-compile`` skips it (it compiles two graphs, tens of seconds on a CPU).
Prints Markdown tables and one JSON line (last).
"""
import argparse
import json
import os
import sys

os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported

from adarand_projects.bench.launch_count import PHASES, count, count_compiled, training_step_total  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--classes", type=int, default=196)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--no-compile", action="store_true", help="skip the compiled path")
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
    summary = {path: {phase: {"triton": c["triton"], "aten": c["aten"]} for phase, c in phases.items()}
               for path, phases in result.items()}
    training = {path: training_step_total(phases) for path, phases in result.items()}
    print(f"| training step (loss forward + backward + step()), launches and ops in all | {training['fused']} | "
          f"| {training['eager']} |")
    if not args.no_compile:
        compiled = count_compiled(args.batch, args.classes, args.dim)
        print("\n| compiled (inductor) | generated kernels | extern calls |\n|---|---|---|")
        for phase, counts in compiled.items():
            print(f"| {phase} | {counts['kernels']} | {counts['externs']} |")
            print(f"compiled / {phase}: {counts['names']}", file=sys.stderr)
        summary["compiled"] = {phase: {"kernels": c["kernels"], "externs": c["externs"]}
                               for phase, c in compiled.items()}
    summary["training step total"] = training
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
