"""What the Detectron2 step benchmarks (``tools/bench/bench_det_step.py``, ``bench_seg_step.py``) share: the
two models built from one config, a training step timed with its saved-for-backward bytes, paired
round-robin rounds, AdaRand's own work timed alone, and the report's common part.

A step is forward + backward + SGD step + the prior step of every regularized branch (the prior hook's
work: each head's record taken and its rows stepped). Both models start from the same weights, use
lr 0 (all the work of a step, weights unchanged) and are reseeded before each step, so they draw the
same rows and differ only by AdaRand's own work. On CUDA the clock is wall time and memory
``torch.cuda.max_memory_allocated``; on a CPU, the process's CPU time and the bytes of parameters,
gradients, momentum, buffers and every tensor saved for backward (``saved_tensors_hooks``).
"""
import argparse
import datetime
import os
import platform
import statistics
import time

import torch
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

import adarand
from adarand.detection import adarand_heads, load_detection_cfg, regularizations

from .timing import describe, load_average, paired_ratio, round_robin


def build_step_model(config, opts, device):
    """(model, optimizer): ``config`` with ``opts`` on ``device``, random init seeded 0, every prior seeded, SGD lr 0."""
    cfg = load_detection_cfg(config, ["MODEL.WEIGHTS", "", "MODEL.DEVICE", device, *map(str, opts)])
    torch.manual_seed(0)
    model = build_model(cfg).train()
    for branch in regularizations(model):
        reg = branch.regularizer
        gen = torch.Generator().manual_seed(1)
        reg.prior.init_from_stats(torch.rand(reg.num_classes, reg.feat_dim, generator=gen).to(device),
                                  0.1 * torch.ones(reg.num_classes, reg.feat_dim, device=device))
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.0, momentum=0.9)
    return model, optimizer


def state_bytes(model, optimizer):
    """Bytes of the parameters, buffers, gradients and optimizer state."""
    tensors = list(model.parameters()) + list(model.buffers())
    tensors += [p.grad for p in model.parameters() if p.grad is not None]
    tensors += [v for s in optimizer.state.values() for v in s.values() if torch.is_tensor(v)]
    return sum(t.numel() * t.element_size() for t in tensors)


def train_step(model, optimizer, batch):
    """One training step; (wall seconds, process CPU seconds, saved-for-backward bytes, regularized rows)."""
    saved = [0]

    def pack(t):
        saved[0] += t.numel() * t.element_size()
        return t

    sync = torch.cuda.synchronize if batch[0]["image"].is_cuda else (lambda: None)
    sync()
    start, cpu_start = time.perf_counter(), time.process_time()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        losses = model(batch)
    optimizer.zero_grad(set_to_none=False)
    sum(losses.values()).backward()
    optimizer.step()
    stepped = []
    for head in adarand_heads(model):  # none for "ft"
        for branch, (features, labels) in head.take_sampled_rows().items():
            branch.regularizer.step(features, labels)
            stepped.append(labels)
    sync()
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    kept = sum(int((labels != adarand.IGNORE_INDEX).sum()) for labels in stepped)  # after the clock: a host sync
    return wall, cpu, saved[0], kept


def paired_steps(runs, batch, rounds, warmup, resamples, cuda):
    """Time ``runs`` ({"ft": (model, opt), "adarand": ...}) in round-robin paired rounds, reseeded alike.

    Returns {"times": {m: [(wall, cpu)]}, "peak": {m: bytes}, "ratio": paired_ratio on the clock, "rows": rows
    AdaRand regularized in its last step, "load_before", "load_after"}.
    """
    peak, rows = {}, [0]

    def provider(method):
        calls = [0]

        def run():
            torch.manual_seed(1000 + calls[0])  # both models draw the same rows in a round
            calls[0] += 1
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            wall, cpu, saved, kept = train_step(*runs[method], batch)
            mem = torch.cuda.max_memory_allocated() if cuda else state_bytes(*runs[method]) + saved
            peak[method] = max(peak.get(method, 0), mem)
            if method != "ft":
                rows[0] = kept
            return wall, cpu

        return run

    load_before = load_average()
    with EventStorage():
        times = round_robin({m: provider(m) for m in runs}, rounds, warmup)
    load_after = load_average()
    clock = 0 if cuda else 1
    ratio = paired_ratio([t[clock] for t in times["ft"]], [t[clock] for t in times["adarand"]], resamples=resamples)
    return {"times": times, "peak": peak, "ratio": ratio, "rows": rows[0], "load_before": load_before,
            "load_after": load_after}


def time_regularizer(reg, rows, reps=20):
    """Median ms of AdaRand's own work on ``rows`` random rows: loss, its backward, prior step."""
    device = reg.prior.mu.device
    features = torch.randn(rows, reg.feat_dim, device=device, requires_grad=True)
    labels = torch.randint(0, reg.num_classes, (rows,), device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times = []
    for _ in range(reps + 2):
        sync()
        start = time.perf_counter()
        reg(features, labels).backward()
        reg.step(features.detach(), labels)
        sync()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times[2:])


def step_result(measured, rounds, images, size, cuda):
    """(result dict, Markdown table, device) of :func:`paired_steps`' measurement: the keys both benchmarks report."""
    clock = 0 if cuda else 1
    ratio, times = measured["ratio"], measured["times"]
    ms = {m: {k: 1e3 * statistics.median(t[k] for t in times[m]) for k in (0, 1)} for m in times}
    mb = {m: b / 2**20 for m, b in measured["peak"].items()}
    device = torch.cuda.get_device_name() if cuda else \
        f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} torch thread(s))"
    result = {
        "time_ratio": round(ratio["ratio"], 4), "ci_low": round(ratio["ci_low"], 4),
        "ci_high": round(ratio["ci_high"], 4), "within_noise": ratio["within_noise"], "rounds": rounds,
        "clock": "wall" if cuda else "process CPU time", "load_before": measured["load_before"],
        "load_after": measured["load_after"], "memory_ratio": round(mb["adarand"] / mb["ft"], 5),
        "ft_median_ms": round(ms["ft"][clock], 1), "adarand_median_ms": round(ms["adarand"][clock], 1),
        "ft_peak_mb": round(mb["ft"], 1), "adarand_peak_mb": round(mb["adarand"], 1), "device": device,
        "memory_kind": "cuda max_memory_allocated" if cuda else "state + saved-for-backward bytes",
        "images": images, "size": size, "torch": torch.__version__, "adarand_backend": adarand.get_backend(),
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    rows = [f"| {m} | {ms[m][0]:.1f} | {ms[m][1]:.1f} | {mb[m]:.1f} |" for m in ("ft", "adarand")]
    table = "\n".join(["| method | wall ms (p50) | CPU ms (p50) | peak MB |", "|---|---|---|---|", *rows])
    return result, table, device


def ratio_sentence(result, ratio):
    """The summary's opening: the time ratio with its interval and the memory ratio."""
    return (f"AdaRand / FT time ({result['clock']}, median of {result['rounds']} paired rounds, 95 % bootstrap CI): "
            f"{describe(ratio)}; memory x{result['memory_ratio']:.4f}.")


def load_sentence(result):
    return f"Load average (1, 5, 15 min): {result['load_before']} before, {result['load_after']} after."


def step_arguments(description, report):
    """The arguments every training-step benchmark takes (``report``: its default file under benchmarks/)."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=0, help="timed rounds (default 30 on CUDA, 16 on CPU)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads on a CPU (default 1)")
    parser.add_argument("--resamples", type=int, default=10000, help="bootstrap resamples of the rounds")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="seconds-long smoke run (see above)")
    parser.add_argument("--out", default=None, help=f"report file (default {report}; none with --quick)")
    return parser


def step_settings(args, report):
    """``(cuda, rounds, out)`` of parsed :func:`step_arguments`; ``--quick`` shrinks the run (64 px, one image, one
    warm-up, 4 rounds, 500 resamples) and writes no file; on a CPU sets torch's threads."""
    cuda = args.device == "cuda"
    if args.quick:
        args.size, args.images, args.warmup = 64, 1, 1
        args.rounds, args.resamples = args.rounds or 4, min(args.resamples, 500)
    rounds = args.rounds or (30 if cuda else 16)
    out = args.out if args.out is not None else ("" if args.quick else report)
    if not cuda:
        torch.set_num_threads(args.threads)
    return cuda, rounds, out
