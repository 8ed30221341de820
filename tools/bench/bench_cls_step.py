#!/usr/bin/env python
"""Training-step time and peak memory of plain fine-tuning and of each regularizer / baseline.

Every method runs the trainer's own step (``ClassificationTrainer.run_step``: forward, CE +
term, backward, optimizer step; then the prior-step hook) on the same model and the same batch:
ResNet-50 (random init), 224 px, 196 classes (Stanford Cars), batch 64 with bf16 +
channels-last on a GPU, batch 8 in fp32 on a CPU.

Time: methods are timed round-robin (``adarand_projects.bench.timing.round_robin``), one step each per
round and a different method first each round, so slow drifts of a shared machine hit
every method alike (CUDA synchronised around each step). Each method's time ratio to FT
is the median over rounds of the paired per-round ratios, with a 95 % bootstrap
confidence interval (rounds resampled, pairs kept); an interval holding 1.0 is reported
"within noise". Ratios use wall time on CUDA and the process's CPU time on a CPU, where
torch runs one thread (``--threads``): a single-threaded process's CPU time is barely
disturbed by other jobs, while idle OpenMP threads spin and inflate it when cores are
oversubscribed. The load average is recorded before and after. CPU defaults (12 timed
rounds of ~3 s steps) are meant to give an interval within +-3 % on an idle 2-core
machine; a loaded machine widens it, which the interval then shows. Memory: on CUDA the peak allocated bytes of a
method's steps (``torch.cuda.max_memory_allocated`` after a reset); on a CPU each method
runs a few steps in a fresh process and reports the growth of its peak RSS
(``ru_maxrss`` after the steps minus the resident size before them): this leaves out what
the set-up holds (L2-SP's copy of the starting weights, DELTA's frozen network), which the
CUDA figure includes (tracemalloc does not see torch's allocator).

    python tools/bench/bench_cls_step.py [--batch 8] [--size 224] [--rounds 12] [--warmup 2]
        [--methods ft adarand ...] [--out benchmarks/cls_step.md] [--compile] [--quick]

``--compile``: the backbone (``torch.compile`` of the feature extractor) and the regularizer's
forward and ``step`` (``fullgraph=True``, value checks off) are compiled for every method, so
the ratio is compiled AdaRand / compiled FT; the warm-up rounds absorb the compilation.

``--quick``: a seconds-long smoke run (FT and AdaRand, 32 px, batch 2, 4 rounds, no
memory figures, no file unless --out is given). Prints a table, writes it to --out, and
prints one JSON object on its last line: AdaRand's ``time_ratio`` with ``ci_low`` and
``ci_high``, and every method's ratio and interval.
"""
import argparse
import datetime
import multiprocessing as mp
import os
import platform
import resource
import sys

import torch

import adarand
from adarand.classification import backbones
from adarand.classification.build import build_baseline, build_regularizer
from adarand.classification.solver import build_optimizer
from adarand.classification.config import get_cfg
from adarand.classification.steps import FeaturesAndLogits, new_guard, set_train_mode
from adarand.classification.storage import TrainingStorage
from adarand.classification.trainer import ClassificationTrainer

from adarand_projects.bench.builders import compile_regularizer
from adarand_projects.bench.timing import describe, load_average, median_ms, paired_ratio, round_robin, timed_call, \
    write_report

METHODS = [("ft", "none", ""), ("fnp", "fnp", ""), ("randreg-cp", "randreg-cp", ""), ("adarand", "adarand", ""),
           ("ptr", "ptr", ""), ("l2sp", "none", "l2sp"), ("delta", "none", "delta"), ("bss", "none", "bss")]
NUM_CLASSES = 196
DEFAULT_METHODS = ["ft", "fnp", "randreg-cp", "adarand", "ptr"]  # the regularizers; baselines on request


def make_cfg(device, regularizer, baseline):
    cfg = get_cfg()
    cfg.MODEL.ADARAND.METHOD, cfg.BASELINE.METHOD = regularizer, baseline
    cfg.BASELINE.DELTA_ATTENTION = "none"  # the step costs the same with any fixed channel weights
    cfg.AMP = "bf16" if device.type == "cuda" else "off"
    cfg.freeze()
    return cfg


class Setup(ClassificationTrainer):
    """The trainer's step for one method on a synthetic batch: model, optimizer, regularizer,
    baseline and the prior step, without data loaders (``__init__`` builds only those)."""

    def __init__(self, name, regularizer, baseline, device, batch, size, model=None, net=None, compile=False):
        self.name, self.device, self.epoch, self.inner_iter, self._hooks = name, device, 0, 0, []
        self.cfg = make_cfg(device, regularizer, baseline)
        torch.manual_seed(0)
        if model is None:
            model = backbones.build_classifier("resnet50", NUM_CLASSES, weights="").to(device)
            if device.type == "cuda":
                model = model.to(memory_format=torch.channels_last)
        if net is None:
            net = FeaturesAndLogits(model)
            net = torch.compile(net) if compile else net
        self.model, self.net = model, net
        self.regularizer = build_regularizer(self.cfg, NUM_CLASSES, model.feat_dim,
                                             total_steps=1000).to(device)
        if self.regularizer.needs_stats:
            acc = adarand.ClassStatsAccumulator(NUM_CLASSES, device=device)
            acc.update(torch.rand(2 * NUM_CLASSES, model.feat_dim, device=device),
                       torch.arange(NUM_CLASSES, device=device).repeat(2))
            self.regularizer.init_from_stats(acc.finalize())
        if compile:
            self.regularizer.forward, self.regularizer.step = compile_regularizer(self.regularizer)
        self.baseline = build_baseline(self.cfg, model)
        if self.baseline is not None:
            self.baseline.to(device)
        self.optimizer = build_optimizer(self.cfg, model)
        self.scaler = torch.amp.GradScaler(device.type, enabled=False)
        g = torch.Generator().manual_seed(1)
        self.images = torch.randn(batch, 3, size, size, generator=g).to(device)
        if device.type == "cuda":
            self.images = self.images.contiguous(memory_format=torch.channels_last)
        self.labels = torch.randint(0, NUM_CLASSES, (batch,), generator=g).to(device)
        self.guard, self.train_loader = new_guard(device), [None]
        self.storage = TrainingStorage()

    def step(self):
        set_train_mode(self.cfg, self.net, self.baseline)
        self.run_step((self.images, self.labels))
        self.after_step()


def time_methods(methods, device, batch, size, rounds, warmup, compile=False):
    """{method: [(wall, CPU) seconds of each timed round]}, round-robin on one shared model (and compiled net)."""
    setups = []
    for name, reg, base in methods:
        first = setups[0] if setups else None
        setups.append(Setup(name, reg, base, device, batch, size, model=first and first.model,
                            net=first and first.net, compile=compile))
    return round_robin({s.name: (lambda s=s: timed_call(s.step, s.device)) for s in setups}, rounds, warmup)


def current_rss_kb():
    """Resident set size now (Linux /proc), in kB like ru_maxrss."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def cpu_peak_child(method, batch, size, steps, threads, queue):
    """Child process: set-up, then ``steps`` steps; peak-RSS growth in MB."""
    torch.set_num_threads(threads)
    setup = Setup(*method, torch.device("cpu"), batch, size)
    before = current_rss_kb()
    for _ in range(steps):
        setup.step()
    queue.put((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024.0)


def peak_memory(methods, device, batch, size, steps, threads=1):
    """Peak MB per method (CUDA: allocated; CPU: peak RSS growth in a fresh process)."""
    out = {}
    for name, reg, base in methods:
        if device.type == "cuda":
            setup = Setup(name, reg, base, device, batch, size)
            setup.step()
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            for _ in range(steps):
                setup.step()
            torch.cuda.synchronize()
            out[name] = torch.cuda.max_memory_allocated() / 2**20
            del setup
            torch.cuda.empty_cache()
        else:
            ctx = mp.get_context("spawn")
            queue = ctx.Queue()
            proc = ctx.Process(target=cpu_peak_child, args=((name, reg, base), batch, size, steps, threads, queue))
            proc.start()
            out[name] = queue.get()
            proc.join()
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=0, help="batch size (default 64 on CUDA, 8 on CPU)")
    parser.add_argument("--rounds", type=int, default=0, help="timed rounds (default 30 on CUDA, 12 on CPU)")
    parser.add_argument("--warmup", type=int, default=0, help="warm-up rounds (default 5 on CUDA, 2 on CPU)")
    parser.add_argument("--size", type=int, default=224, help="input side in pixels")
    parser.add_argument("--methods", nargs="*", default=DEFAULT_METHODS,
                        help=f"subset of {[m[0] for m in METHODS]} (ft is always included)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads on a CPU (default 1, see above)")
    parser.add_argument("--resamples", type=int, default=10000, help="bootstrap resamples of the rounds")
    parser.add_argument("--compile", action="store_true", help="compiled FT vs compiled methods (see above)")
    parser.add_argument("--quick", action="store_true", help="seconds-long smoke run (see above)")
    parser.add_argument("--out", default=None, help="report file (default benchmarks/cls_step.md; none with --quick)")
    args = parser.parse_args(argv)
    if args.quick:
        args.methods, args.size, args.batch = ["ft", "adarand"], 32, args.batch or 2
        args.rounds, args.warmup, args.resamples = args.rounds or 4, args.warmup or 1, min(args.resamples, 500)
    out = args.out if args.out is not None else ("" if args.quick else "benchmarks/cls_step.md")
    unknown = set(args.methods) - {m[0] for m in METHODS}
    if unknown:
        parser.error(f"unknown method(s) {sorted(unknown)}")
    methods = [m for m in METHODS if m[0] == "ft" or m[0] in args.methods]
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    if not cuda:
        torch.set_num_threads(args.threads)
    batch, size = args.batch or (64 if cuda else 8), args.size
    rounds, warmup = args.rounds or (30 if cuda else 12), args.warmup or (5 if cuda else 2)
    load_before = load_average()
    times = time_methods(methods, device, batch, size, rounds, warmup, compile=args.compile)
    load_after = load_average()
    memory = {} if args.quick else peak_memory(methods, device, batch, size, steps=2 if cuda else 1,
                                                threads=args.threads)
    clock = 0 if cuda else 1  # wall on CUDA, CPU time on a CPU
    name = torch.cuda.get_device_name() if cuda else \
        f"CPU ({os.cpu_count()} cores, {platform.processor() or platform.machine()}), {args.threads} torch thread(s)"
    mem_kind = "peak allocated MB" if cuda else "peak RSS growth MB"
    lines = [f"# Classification training step: ResNet-50, {size} px, batch {batch}, {NUM_CLASSES} classes",
             "", f"`python tools/bench/bench_cls_step.py {' '.join(argv if argv is not None else sys.argv[1:])}`".rstrip(),
             "", f"{name}; torch {torch.__version__}; {'bf16 autocast + channels-last' if cuda else 'fp32'}; "
             f"{rounds} round-robin rounds after {warmup} warm-up; "
             f"{'compiled (torch.compile); ' if args.compile else ''}"
             f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; prior backend {adarand.get_backend()}; "
             f"load average (1, 5, 15 min) {load_before} before the timed rounds, {load_after} after", "",
             "time / FT: median over rounds of the paired per-round ratio of "
             + ("wall times" if cuda else "process CPU times (one torch thread), which a shared CPU disturbs far "
                "less than wall time") + ", with its 95 % bootstrap confidence interval", "",
             f"| method | step ms (p50) | CPU ms (p50) | time / FT [95 % CI] | {mem_kind} | memory / FT |",
             "|---|---|---|---|---|---|"]
    ft_times = [t[clock] for t in times["ft"]]
    ft_m = memory.get("ft")
    summary = {"device": name, "batch": batch, "size": size, "rounds": rounds, "compiled": args.compile,
               "load_before": load_before,
               "load_after": load_after}
    for method, *_ in methods:
        wall, cpu = (median_ms(seconds) for seconds in zip(*times[method]))
        ratio = paired_ratio(ft_times, [t[clock] for t in times[method]], resamples=args.resamples)
        m = memory.get(method)
        mem = f"{m:.0f} | {m / ft_m:.3f}x" if m is not None and ft_m else "not measured | -"
        shown = "1 (reference)" if method == "ft" else describe(ratio)
        lines.append(f"| {method} | {wall:.1f} | {cpu:.1f} | {shown} | {mem} |")
        summary[f"{method}_time_ratio"] = round(ratio["ratio"], 4)
        summary[f"{method}_ci"] = [round(ratio["ci_low"], 4), round(ratio["ci_high"], 4)]
        if m is not None and ft_m:
            summary[f"{method}_mem_ratio"] = round(m / ft_m, 4)
        if method == "adarand":
            summary.update(time_ratio=summary["adarand_time_ratio"], ci_low=summary["adarand_ci"][0],
                           ci_high=summary["adarand_ci"][1], within_noise=ratio["within_noise"])
    text = "\n".join(lines) + "\n"
    write_report(out, text, text, summary)
    return summary


if __name__ == "__main__":
    main()
