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

os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported

from adarand.ops.launch_count import PHASES, count  # noqa: E402


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
