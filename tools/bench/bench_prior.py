#!/usr/bin/env python
"""Per-step cost of the prior: this project's path vs a loop implementation like the public code.

One training step's prior work = sample reference vectors + regression loss (forward and
backward w.r.t. the features) + running-mean EMA + one prior-optimizer step on
L_mean + L_dist. The "loop" provider re-implements the public reference code's costs:
a Python loop over classes for the EMA and a C x C x D tensor for L_dist. The "torch"
provider is adarand's vectorized path; "compiled" the same path under ``torch.compile(fullgraph=True)``
(the regularizer's forward and ``step``; two warm-up steps absorb the compilation); "triton"
(CUDA only) its fused kernels.

Each (shape, provider) runs in a fresh subprocess so its peak memory is its own: CUDA
peak allocated bytes, or on CPU the growth of the process's peak RSS over the set-up.

    python tools/bench/bench_prior.py [--repeats 20] [--out benchmarks/prior.md]

Prints a table, writes it to --out, and prints the key figures as one JSON line last.
"""
import argparse
import datetime
import multiprocessing as mp
import os
import platform
import resource
import statistics
import sys

import torch
import torch.nn.functional as F

from adarand_projects.bench.builders import compile_regularizer
from adarand_projects.bench.timing import timed_call, write_report

SHAPES = {"cars-r50": (64, 196, 2048), "imagenet-vitb": (64, 1000, 768)}


class LoopPrior:
    """Costs of the public reference code: per-class Python loop, C x C x D cosine tensor."""

    def __init__(self, mean, std, alpha=0.5, lr=1e-2):
        self.mu = mean.clone().requires_grad_(True)
        self.sigma, self.running_mean, self.alpha = std.clone(), mean.clone(), alpha
        self.optimizer = torch.optim.Adam([self.mu], lr=lr)

    def __call__(self, features, labels):
        targets = self.mu.detach()[labels] + self.sigma[labels] * torch.randn_like(features)
        ((features - targets) ** 2).mean().backward()
        with torch.no_grad():
            for c in range(self.mu.shape[0]):
                rows = features.detach()[labels == c]
                if len(rows):
                    self.running_mean[c] = self.alpha * self.running_mean[c] + (1 - self.alpha) * rows.mean(0)
        num_classes = self.mu.shape[0]
        l_mean = ((1 - F.cosine_similarity(self.mu, self.running_mean, dim=1)) ** 2).mean()
        pairwise = F.cosine_similarity(self.mu[:, None, :], self.mu[None, :, :], dim=-1)  # builds C x C x D
        off_diagonal = 1 - torch.eye(num_classes, device=self.mu.device)
        l_dist = (pairwise.pow(2) * off_diagonal).sum() / (num_classes * (num_classes - 1))
        self.optimizer.zero_grad()
        (l_mean + l_dist).backward()
        self.optimizer.step()


class AdaRandStep:
    """adarand's path: the regularizer's forward/backward, then reg.step (EMA + prior update)."""

    def __init__(self, mean, std, backend, compile=False):
        import adarand

        adarand.set_backend(backend)
        self.reg = adarand.build_regularizer("adarand", num_classes=mean.shape[0], feat_dim=mean.shape[1],
                                             check_values=False).to(mean.device)
        self.reg.prior.init_from_stats(mean, std)
        self.forward, self.step = compile_regularizer(self.reg) if compile else (self.reg, self.reg.step)

    def __call__(self, features, labels):
        self.forward(features, labels).backward()
        self.step(features.detach(), labels)


def measure(provider, shape, device_name, repeats, queue):
    """Run in a subprocess: time `repeats` steps after warm-up; report times and peak memory."""
    device = torch.device(device_name)
    batch, num_classes, dim = shape
    g = torch.Generator(device="cpu").manual_seed(0)
    mean = torch.randn(num_classes, dim, generator=g).to(device)
    std = (torch.rand(num_classes, dim, generator=g) + 0.1).to(device)
    features = torch.randn(batch, dim, generator=g).to(device).requires_grad_(True)
    labels = torch.randint(0, num_classes, (batch,), generator=g).to(device)
    if provider == "loop":
        step = LoopPrior(mean, std)
    else:
        step = AdaRandStep(mean, std, "torch" if provider == "compiled" else provider, compile=provider == "compiled")
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    for i in range(repeats + 2):
        seconds, _ = timed_call(lambda: step(features, labels), device)
        features.grad = None
        if i >= 2:  # two warm-up steps
            times.append(seconds)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) * 1024
    queue.put({"times_ms": [t * 1e3 for t in times], "peak_mb": peak / 2**20})


def run_isolated(provider, shape, device, repeats):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=measure, args=(provider, shape, device, repeats, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def percentile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--loop-repeats", type=int, default=5, help="the loop version is slow: fewer repeats")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--out", default="benchmarks/prior.md")
    args = parser.parse_args()

    from adarand.ops import HAS_TRITON

    providers = ["loop", "torch", "compiled"] + (["triton"] if args.device == "cuda" and HAS_TRITON else [])
    device_label = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU ({os.cpu_count()} cores, {platform.processor() or platform.machine()})"
    rows, summary = [], {"device": device_label, "torch": torch.__version__}
    for shape_name in args.shapes:
        shape = SHAPES[shape_name]
        results = {}
        for provider in providers:
            repeats = args.loop_repeats if provider == "loop" else args.repeats
            print(f"[{shape_name} B,C,D={shape}] {provider} ...", file=sys.stderr, flush=True)
            results[provider] = run_isolated(provider, shape, args.device, repeats)
        loop_median = statistics.median(results["loop"]["times_ms"])
        for provider, res in results.items():
            median = statistics.median(res["times_ms"])
            rows.append((shape_name, shape, provider, percentile(res["times_ms"], 0.2), median,
                         percentile(res["times_ms"], 0.8), res["peak_mb"], loop_median / median))
            summary[f"{shape_name}_{provider}_ms"] = round(median, 3)
            summary[f"{shape_name}_{provider}_peak_mb"] = round(res["peak_mb"], 1)
            if provider != "loop":
                summary[f"{shape_name}_{provider}_speedup_vs_loop"] = round(loop_median / median, 1)

    header = ("| shape | B, C, D | provider | p20 ms | p50 ms | p80 ms | peak MB | speed-up vs loop |\n"
              "|---|---|---|---:|---:|---:|---:|---:|")
    lines = [f"| {s} | {b}, {c}, {d} | {p} | {p20:.2f} | {p50:.2f} | {p80:.2f} | {mb:.1f} | {x:.1f}x |"
             for s, (b, c, d), p, p20, p50, p80, mb, x in rows]
    table = "\n".join([header] + lines)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    report = (f"# Prior step benchmark\n\nOne training step's prior work (sample + loss fwd/bwd + EMA + prior "
              f"update), measured by `tools/bench/bench_prior.py` on {device_label}, torch {torch.__version__}, {stamp}.\n"
              f"Peak MB: {'CUDA peak allocated' if args.device == 'cuda' else 'growth of peak RSS over set-up'} "
              f"(each provider in its own process).\n\n{table}\n")
    write_report(args.out, report, table, summary)


if __name__ == "__main__":
    main()
