#!/usr/bin/env python
"""Kernel-level benchmark of the prior's ops: PyTorch path vs fused Triton kernels (CUDA only).

For each shape and op, times ``triton.testing.do_bench`` (p20/p50/p80 ms) and the CUDA
peak memory of one call, and reports the achieved bandwidth, a minimum-traffic byte
count divided by the median time, as a fraction of the device's DRAM peak.

Shapes: ``cars`` (Stanford Cars, ResNet-50: B=64, C=196, D=2048, labels uniform),
``det`` (ROI-head features: 8192 x 1024, C=20, 90% of the rows one class) and ``seg{k}_d{D}``
(per-pixel features of a segmentation batch: N = 2^k rows for k = 16..20, C=21 as VOC, D=128 and
256, 70% of the rows one class as VOC's background).
Ops: ``target_fwd``, ``target_fwd_bwd``, ``class_sums``, ``ema_apply``, and
``prior_step`` (AdaRand regularizer forward + backward + ``reg.step``); the ``seg`` shapes run
``class_sums`` only unless ``--ops`` names others. Providers: ``torch`` (the PyTorch path,
``index_add_``) and ``triton``; ``class_sums`` also times ``triton_1block``, the kernel with one
row block whatever the batch (the design before row blocks), so the gain of the two-level sum is
measured where it applies (above 8192 rows; at or below, both are the same launch).

    python tools/bench/bench_kernels.py [--dtype float32|bfloat16] [--shapes ...] [--ops ...]
                                        [--out benchmarks/kernels.md]

Writes a Markdown table to --out and prints one JSON object as the last line. Without
CUDA it says so and exits 0.
"""
import argparse
import datetime
import json
import sys

import torch

from adarand_projects.bench.timing import write_report

SHAPES = {"cars": (64, 196, 2048, None), "det": (8192, 20, 1024, 0.9),  # B, C, D, share of the dominant class
          **{f"seg{k}_d{dim}": (2**k, 21, dim, 0.7) for k in range(16, 21) for dim in (128, 256)}}
OPS = ("target_fwd", "target_fwd_bwd", "class_sums", "ema_apply", "prior_step")
SEG_OPS = ("class_sums",)  # the segmentation shapes' default ops
PROVIDERS = {"class_sums": ("torch", "triton", "triton_1block")}  # other ops: ("torch", "triton")
PEAK_TBPS = {"H100": 3.35, "H200": 4.8, "A100": 2.0}  # used when the device does not report its memory clock


def dram_peak_bytes_per_s(device=0):
    """2 x memory clock x bus width (DDR), else the table above by device name; None if unknown."""
    props = torch.cuda.get_device_properties(device)
    clock_khz, bus_bits = getattr(props, "memory_clock_rate", 0), getattr(props, "memory_bus_width", 0)
    if clock_khz and bus_bits:
        return 2 * clock_khz * 1e3 * bus_bits / 8
    for key, tbps in PEAK_TBPS.items():
        if key in props.name:
            return tbps * 1e12
    return None


def make_problem(shape, dtype, device, seed=0):
    """Features, labels, prior mean/std, running means and class sums for one shape."""
    batch, num_classes, dim, dominant = SHAPES[shape]
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, num_classes, (batch,), generator=g)
    if dominant:
        labels[torch.rand(batch, generator=g) < dominant] = 0
    problem = {
        "features": torch.randn(batch, dim, generator=g).to(device, dtype),
        "labels": labels.to(device),
        "mu": torch.randn(num_classes, dim, generator=g).to(device),
        "sigma": (torch.rand(num_classes, dim, generator=g) + 0.1).to(device),
        "present": int(labels.unique().numel()),
    }
    problem["running_mean"] = problem["mu"].clone()
    return problem


def min_bytes(op, problem):
    """Bytes any implementation must move: read features/labels once, the prior rows used, write outputs."""
    f = problem["features"]
    batch, dim = f.shape
    num_classes = problem["mu"].shape[0]
    feat, rows = f.numel() * f.element_size(), 2 * problem["present"] * dim * 4  # mu and sigma rows in use
    table = num_classes * dim * 4
    fwd = feat + batch * 8 + rows
    counts = {
        "target_fwd": fwd,
        "target_fwd_bwd": 2 * fwd + feat,  # the backward re-reads and writes the gradient
        "class_sums": feat + batch * 8 + num_classes * (dim + 1) * 4,
        "ema_apply": num_classes * (dim + 1) * 4 + 2 * table,
    }
    # prior step: loss fwd+bwd, class sums, EMA, and the prior update (mu, m, Adam moments read; mu, moments written)
    counts["prior_step"] = (counts["target_fwd_bwd"] + counts["class_sums"] + counts["ema_apply"] + 7 * table)
    return counts[op]


def make_call(op, provider, problem):
    """A closure running ``op`` once on ``provider``, and the tensors whose grads to reset between calls."""
    import adarand
    from adarand import ops

    f, y, mu, sigma = problem["features"], problem["labels"], problem["mu"], problem["sigma"]
    num_classes = mu.shape[0]
    if op == "target_fwd":
        return lambda: ops.target_loss(f, y, mu, sigma, impl=provider), None
    if op == "target_fwd_bwd":
        leaf = f.detach().clone().requires_grad_(True)
        return lambda: ops.target_loss(leaf, y, mu, sigma, impl=provider).backward(), [leaf]
    if op == "class_sums" and provider == "triton_1block":
        from adarand.ops.class_ema_triton import class_sums_triton

        return lambda: class_sums_triton(f, y, num_classes, row_blocks=1), None
    if op == "class_sums":
        return lambda: ops.class_sums(f, y, num_classes, impl=provider), None
    if op == "ema_apply":
        sums = ops.class_sums(f, y, num_classes, impl="torch")
        running = problem["running_mean"].clone()
        return lambda: ops.ema_apply_(running, sums, 0.5, impl=provider), None
    reg = adarand.build_regularizer("adarand", num_classes=num_classes, feat_dim=f.shape[1], check_values=False)
    reg = reg.to(f.device)
    reg.prior.init_from_stats(mu, sigma)
    leaf = f.detach().clone().requires_grad_(True)

    def step():
        adarand.set_backend(provider)
        try:
            reg(leaf, y).backward()
            reg.step(leaf.detach(), y)
        finally:
            adarand.set_backend(None)

    return step, [leaf]


def measure(fn, grad_to_none):
    from triton.testing import do_bench

    fn()  # compile / warm the allocator
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    peak_mb = (torch.cuda.max_memory_allocated() - base) / 2**20
    p20, p50, p80 = do_bench(fn, grad_to_none=grad_to_none, quantiles=[0.2, 0.5, 0.8])
    return p20, p50, p80, peak_mb


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--ops", nargs="+", choices=list(OPS),
                        help=f"default: all for cars and det, {', '.join(SEG_OPS)} for the seg shapes")
    parser.add_argument("--out", default="benchmarks/kernels.md")
    args = parser.parse_args()

    if not torch.cuda.is_available():
        print("bench_kernels: no CUDA device; the Triton kernels are benchmarked on a GPU only "
              "(their correctness is tested on the CPU with TRITON_INTERPRET=1). Nothing written.")
        print(json.dumps({"skipped": "no CUDA device"}))
        return 0
    import triton

    from adarand.ops import HAS_TRITON

    if not HAS_TRITON:
        print("bench_kernels: triton is not installed")
        print(json.dumps({"skipped": "triton not installed"}))
        return 0

    dtype, device = getattr(torch, args.dtype), torch.device("cuda")
    peak = dram_peak_bytes_per_s()
    name = torch.cuda.get_device_name()
    rows, summary = [], {"device": name, "dtype": args.dtype, "torch": torch.__version__, "triton": triton.__version__,
                         "dram_peak_tbps": round(peak / 1e12, 2) if peak else None}
    for shape in args.shapes:
        problem = make_problem(shape, dtype, device)
        for op in args.ops or (SEG_OPS if shape.startswith("seg") else OPS):
            nbytes = min_bytes(op, problem)
            medians = {}
            for provider in PROVIDERS.get(op, ("torch", "triton")):
                print(f"[{shape}] {op} {provider} ...", file=sys.stderr, flush=True)
                p20, p50, p80, peak_mb = measure(*make_call(op, provider, problem))
                gbps = nbytes / (p50 * 1e-3) / 1e9
                frac = nbytes / (p50 * 1e-3) / peak if peak else float("nan")
                rows.append((shape, op, provider, p20, p50, p80, peak_mb, gbps, frac))
                medians[provider] = p50
                summary[f"{shape}_{op}_{provider}_ms"] = round(p50, 4)
                summary[f"{shape}_{op}_{provider}_peak_fraction"] = round(frac, 3)
            summary[f"{shape}_{op}_speedup"] = round(medians["torch"] / medians["triton"], 2)
            if "triton_1block" in medians:
                summary[f"{shape}_{op}_row_block_gain"] = round(medians["triton_1block"] / medians["triton"], 2)

    header = ("| shape | op | provider | p20 ms | p50 ms | p80 ms | peak MB | GB/s (min traffic) | of DRAM peak |\n"
              "|---|---|---|---:|---:|---:|---:|---:|---:|")
    lines = [f"| {s} | {o} | {p} | {a:.4f} | {b:.4f} | {c:.4f} | {mb:.1f} | {g:.0f} | {fr:.1%} |"
             for s, o, p, a, b, c, mb, g, fr in rows]
    table = "\n".join([header] + lines)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    shapes = "; ".join(f"{k}: B={v[0]}, C={v[1]}, D={v[2]}" + (f", {v[3]:.0%} one class" if v[3] else "")
                       for k, v in SHAPES.items() if k in args.shapes)
    report = (f"# Prior kernels: PyTorch path vs Triton\n\nMeasured by `tools/bench/bench_kernels.py` on {name}, "
              f"features {args.dtype}, torch {torch.__version__}, triton {triton.__version__}, {stamp}.\n"
              f"Shapes: {shapes}. DRAM peak {summary['dram_peak_tbps']} TB/s. Bandwidth counts the minimum bytes "
              f"an op must move (features, labels, the prior rows in use, outputs) over the median time.\n\n{table}\n")
    write_report(args.out, report, table, summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
