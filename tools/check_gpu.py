#!/usr/bin/env python
"""Check this machine's GPU against the PyTorch reference, in one command, and write benchmarks/gpu.md.

    python tools/check_gpu.py                 # on a CUDA machine
    python tools/check_gpu.py --smoke         # toy sizes; without CUDA the kernels run under TRITON_INTERPRET=1

What it does, each step a row of the report:

1. **kernels**: every fused kernel (target loss forward/backward, class sums, EMA, prior update)
   against the PyTorch path on this device; with a source checkout, also ``pytest tests/ops``
   (the kernel test suite; not with ``--smoke``, where ``make test`` runs it already).
2. **compile + capture**: AdaRand's ``reg.step`` compiled with ``torch.compile(fullgraph=True)``
   equals eager over a few steps; on CUDA a whole training step (forward, CE + AdaRand,
   backward, SGD step, ``reg.step``) is captured in a CUDA graph and replayed, and the captured
   ``reg.step`` equals an eager twin's.
3. **class sums at pixel scale**: the class-sums kernel on segmentation batches (N = 2^16..2^20
   rows, C = 21, D = 128 and 256, 70 % of the rows one class; with ``--smoke`` 100 rows cut into
   4 row blocks): equal to the PyTorch path (``index_add_``) bit for bit on integer-valued
   features (every order sums them exactly), within a float64 reference's tolerance on normal
   ones, bit-reproducible, no flag set; and its time against ``index_add_`` and against the
   kernel with one row block (the design before row blocks).
4. **prior step time**: one ``reg.step`` at the Stanford Cars shape (B=64, C=196, D=2048),
   Triton vs PyTorch vs compiled (medians over interleaved rounds).
5. **bandwidth**: the fused prior update's bytes moved / time, as a fraction of the device's
   peak memory bandwidth (from its memory clock and bus width when torch reports them, else of
   a measured device-to-device copy).
6. **ResNet-50 step ratio** AdaRand / FT with its 95 % interval (``tools/bench/bench_cls_step.py``).

Prints the table, writes it to ``--out`` (default ``benchmarks/gpu.md``; with ``--smoke`` no
file unless ``--out`` is given), and ends with one JSON line; exits 1 if a check fails.
"""
import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported (by adarand); --smoke only

import adarand  # noqa: E402
from adarand_projects.bench.builders import seeded_adarand  # noqa: E402
from adarand_projects.bench.timing import median_ms, round_robin, timed_call, write_report  # noqa: E402
from adarand.ops import class_ema_triton, prior_step  # noqa: E402
from adarand.ops.class_ema import _class_sums_ref, _ema_apply_ref_  # noqa: E402
from adarand.ops.target_loss import _target_loss_ref  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CARS = (64, 196, 2048)
PIXELS = [(2**k, 21, dim) for k in range(16, 21) for dim in (128, 256)]  # segmentation batches: N, C, D


def close(a, b, rtol=1e-5, atol=1e-6):
    return bool(torch.allclose(a.double(), b.double(), rtol=rtol, atol=atol))


def check_kernels(device, shape):
    """{check: bool}: each fused kernel equals the PyTorch path on ``device``."""
    from adarand.ops.target_loss import target_loss_triton

    batch, num_classes, dim = shape
    g = torch.Generator().manual_seed(0)
    f = torch.randn(batch, dim, generator=g).to(device)
    y = torch.randint(0, num_classes, (batch,), generator=g).to(device)
    y[0] = adarand.IGNORE_INDEX
    mu = torch.randn(num_classes, dim, generator=g).to(device)
    zero = torch.zeros_like(mu)  # sigma = 0: the target is mu_y exactly, whatever the noise
    results = {}
    for name, m, s in (("target loss (regression onto mu_y)", mu, zero), ("target loss (FNP)", None, None)):
        leaf, ref_leaf = f.clone().requires_grad_(True), f.clone().requires_grad_(True)
        loss = target_loss_triton(leaf, y, m, s, num_classes=num_classes)
        eps = torch.zeros_like(f) if m is not None else None
        ref = _target_loss_ref(ref_leaf, y, m, s, eps, num_classes)
        (loss * 3).backward()
        (ref * 3).backward()
        results[name] = close(loss, ref) and close(leaf.grad, ref_leaf.grad)
    sums = class_ema_triton.class_sums_triton(f, y, num_classes)
    results["class sums"] = close(sums, _class_sums_ref(f, y, num_classes))
    ours, ref = mu.clone(), mu.clone()
    class_ema_triton.ema_apply_triton_(ours, sums, 0.5)
    _ema_apply_ref_(ref, sums, 0.5)
    results["running-mean EMA"] = close(ours, ref)
    states = [[mu.clone(), mu + 0.5 * torch.randn_like(mu), zero.clone(), zero.clone(),
               torch.zeros((), dtype=torch.int64, device=device)] for _ in range(2)]
    states[1][1].copy_(states[0][1])
    ok = True
    for _ in range(3):
        a = prior_step.prior_step_(*states[0], lr=1e-2, total_steps=10, impl="triton")
        b = prior_step.prior_step_(*states[1], lr=1e-2, total_steps=10, impl="torch")
        ok &= close(a, b) and all(close(x, z) for x, z in zip(states[0], states[1]))
    results["prior update (gradient + Adam)"] = ok
    return results


def _pixel_batch(shape, device, integer):
    """Features (integers in [-8, 8] if ``integer``, else normal) and labels, 70 % of the rows class 0."""
    batch, num_classes, dim = shape
    g = torch.Generator().manual_seed(4)
    f = torch.randint(-8, 9, (batch, dim), generator=g).float() if integer else torch.randn(batch, dim, generator=g)
    y = torch.randint(0, num_classes, (batch,), generator=g)
    y[torch.rand(batch, generator=g) < 0.7] = 0
    y[::97] = adarand.IGNORE_INDEX
    return f.to(device), y.to(device)


def check_pixel_class_sums(device, shapes, rounds, row_blocks=None):
    """({check: bool}, {shape label: {provider: median ms}}): the class-sums kernel at segmentation shapes against
    the PyTorch path, and its time against that path (``index_add_``) and against one row block."""
    checks, times = {}, {}
    for shape in shapes:
        batch, num_classes, dim = shape
        label = f"N={batch}, C={num_classes}, D={dim}"
        f, y = _pixel_batch(shape, device, integer=True)
        sums, flags = class_ema_triton.class_sums_and_flags_triton(f, y, num_classes, row_blocks)
        ok = bool(torch.equal(sums, _class_sums_ref(f, y, num_classes))) and not bool(flags.any())
        f, y = _pixel_batch(shape, device, integer=False)
        sums = class_ema_triton.class_sums_triton(f, y, num_classes, row_blocks)
        ok &= bool(torch.equal(sums, class_ema_triton.class_sums_triton(f, y, num_classes, row_blocks)))
        ok &= close(sums, _class_sums_ref(f.double(), y, num_classes), atol=1e-5 * batch ** 0.5)
        checks[f"kernel: class sums, {label}, 70 % one class"] = ok
        providers = {"torch": lambda: _class_sums_ref(f, y, num_classes),
                     "triton": lambda: class_ema_triton.class_sums_triton(f, y, num_classes, row_blocks),
                     "triton_1block": lambda: class_ema_triton.class_sums_triton(f, y, num_classes, 1)}
        medians = round_robin({name: lambda fn=fn: timed_call(fn, device)[0] for name, fn in providers.items()},
                              rounds, warmup=2)
        times[label] = {"row_blocks": class_ema_triton.row_split(batch, num_classes, dim, row_blocks)[0], **{name: median_ms(t) for name, t in medians.items()}}
    return checks, times


def run_kernel_suite():
    """``pytest tests/ops`` in a source checkout: (passed, last line), or None without one."""
    tests = os.path.join(ROOT, "tests", "ops")
    if not os.path.isdir(tests):
        return None
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", tests], cwd=ROOT,
                            capture_output=True, text=True)
    lines = result.stdout.strip().splitlines()
    return result.returncode == 0, lines[-1] if lines else result.stderr[-300:]


def _adarand(shape, device):
    """AdaRand for the (B, C, D) ``shape`` on ``device``, its prior seeded."""
    return seeded_adarand(*shape[1:], seed=2, device=device)


def _batches(shape, device, count):
    batch, num_classes, dim = shape
    g = torch.Generator().manual_seed(3)
    return [(torch.randn(batch, dim, generator=g).to(device), torch.randint(0, num_classes, (batch,), generator=g)
             .to(device)) for _ in range(count)]


def check_compile_and_capture(device, shape, smoke):
    """{check: bool or None (not run)}: compiled step == eager; on CUDA, CUDA-graph capture of a step."""
    results = {}
    eager, compiled = _adarand(shape, device), _adarand(shape, device)
    step = torch.compile(compiled.step, fullgraph=True, **({"backend": "aot_eager"} if smoke else {}))
    for f, y in _batches(shape, device, 3):
        eager.step(f, y)
        step(f, y)
    results["reg.step compiled (fullgraph) == eager"] = close(eager.prior.mu, compiled.prior.mu, rtol=1e-4)
    if device.type != "cuda":
        results["CUDA-graph capture of a training step"] = None
        return results
    # reg.step alone, captured, against an eager twin
    eager, captured = _adarand(shape, device), _adarand(shape, device)
    batches = _batches(shape, device, 4)
    static_f, static_y = batches[0][0].clone(), batches[0][1].clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        warm = _adarand(shape, device)
        warm.step(static_f, static_y)  # compiles the kernels outside the capture
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured.step(static_f, static_y)
    captured.load_state_dict(eager.state_dict())  # the capture itself ran nothing
    for f, y in batches:
        static_f.copy_(f)
        static_y.copy_(y)
        graph.replay()
        eager.step(f, y)
    torch.cuda.synchronize()
    results["reg.step in a CUDA graph == eager"] = (close(captured.prior.mu, eager.prior.mu) and int(
        captured.prior.optimizer.num_steps) == int(eager.prior.optimizer.num_steps))
    # a whole training step: backbone, CE + AdaRand, backward, SGD, reg.step
    batch, num_classes, dim = shape
    backbone, head = torch.nn.Linear(32, dim).to(device), torch.nn.Linear(dim, num_classes).to(device)
    reg = _adarand(shape, device)
    optimizer = torch.optim.SGD([*backbone.parameters(), *head.parameters()], lr=1e-3)
    images = torch.randn(batch, 32, device=device)
    labels = torch.randint(0, num_classes, (batch,), device=device)

    def train_step():
        optimizer.zero_grad(set_to_none=False)
        features = backbone(images)
        loss = torch.nn.functional.cross_entropy(head(features), labels) + reg(features, labels)
        loss.backward()
        optimizer.step()
        reg.step(features.detach(), labels)
        return loss.detach()

    with torch.cuda.stream(side):
        for _ in range(3):
            train_step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_loss = train_step()
    before = int(reg.prior.optimizer.num_steps)
    for _ in range(5):
        graph.replay()
    torch.cuda.synchronize()
    results["CUDA-graph capture of a training step"] = bool(torch.isfinite(static_loss)) and int(
        reg.prior.optimizer.num_steps) == before + 5
    return results


def time_prior_step(device, shape, rounds, smoke):
    """{provider: median ms of one reg.step} for triton, torch and compiled (interleaved rounds)."""
    (f, y), = _batches(shape, device, 1)
    compiled = torch.compile(_adarand(shape, device).step, fullgraph=True,
                             **({"backend": "aot_eager"} if smoke else {}))
    # {provider: (backend, step)}; the compiled PyTorch path (compiled on its first warm-up call) runs with the torch
    # backend forced on every call: with the backend unset dynamo could recompile it onto the Triton kernels
    providers = {"triton": ("triton", _adarand(shape, device).step), "torch": ("torch", _adarand(shape, device).step),
                 "compiled": ("torch", compiled)}
    times = round_robin({name: (lambda backend=backend, step=step: prior_step_with(backend, step, f, y))
                         for name, (backend, step) in providers.items()}, rounds, warmup=2)
    return {name: median_ms(t) for name, t in times.items()}


def prior_step_with(backend, step, f, y):
    """Seconds of one ``step(f, y)`` with every op forced onto ``backend``."""
    adarand.set_backend(backend)
    try:
        return timed_call(lambda: step(f, y), f.device)[0]
    finally:
        adarand.set_backend(None)


def bandwidth(device, shape, rounds):
    """(fraction of peak, GB/s achieved, peak GB/s, how the peak was found) of the fused prior update."""
    _, num_classes, dim = shape
    bytes_moved = 4 * num_classes * dim * 16  # rows kernel 3 C x D passes, update kernel 13 (read + write)
    state = [torch.randn(num_classes, dim, device=device), torch.randn(num_classes, dim, device=device),
             torch.zeros(num_classes, dim, device=device), torch.zeros(num_classes, dim, device=device),
             torch.zeros((), dtype=torch.int64, device=device)]
    times = round_robin({"prior": lambda: timed_call(lambda: prior_step.prior_step_(
        *state, lr=1e-2, total_steps=100, impl="triton"), device)[0]}, rounds, warmup=2)["prior"]
    achieved = bytes_moved / statistics.median(times) / 1e9
    props = torch.cuda.get_device_properties(device) if device.type == "cuda" else None
    clock, width = getattr(props, "memory_clock_rate", 0), getattr(props, "memory_bus_width", 0)
    if clock and width:  # kHz, bits; double data rate
        peak, how = 2 * clock * 1e3 * width / 8 / 1e9, "memory clock x bus width"
    else:
        big = torch.empty(2**26 if device.type == "cuda" else 2**20, device=device)
        copies = round_robin({"copy": lambda: timed_call(big.clone, device)[0]}, 5, warmup=1)["copy"]
        copy = statistics.median(copies)
        peak, how = 2 * big.numel() * 4 / copy / 1e9, "a measured device-to-device copy"
    return achieved / peak, achieved, peak, how


def resnet_ratio(smoke):
    """AdaRand / FT training-step ratio of ResNet-50 from tools/bench/bench_cls_step.py: its JSON summary."""
    cmd = [sys.executable, os.path.join(ROOT, "tools", "bench", "bench_cls_step.py"), "--methods", "adarand", "--out", ""]
    if smoke:
        cmd += ["--quick", "--rounds", "3"]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        return {"error": result.stderr[-500:]}
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="toy sizes; on a CPU the kernels run in the interpreter")
    parser.add_argument("--rounds", type=int, default=0, help="timing rounds (default 50, 3 with --smoke)")
    parser.add_argument("--out", default=None, help="report file (default benchmarks/gpu.md; none with --smoke)")
    parser.add_argument("--skip-resnet", action="store_true", help="leave out the ResNet-50 step ratio")
    args = parser.parse_args(argv)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    if not cuda and not args.smoke:
        parser.error("no CUDA device: run with --smoke (toy sizes, kernels in Triton's interpreter)")
    shape = (6, 4, 12) if args.smoke else CARS
    rounds = args.rounds or (3 if args.smoke else 50)
    out = args.out if args.out is not None else ("" if args.smoke else os.path.join(ROOT, "benchmarks", "gpu.md"))

    checks = {f"kernel: {k}": v for k, v in check_kernels(device, (9, 5, 12) if args.smoke else CARS).items()}
    if not args.smoke:
        suite = run_kernel_suite()
        checks["kernel test suite (pytest tests/ops)"] = None if suite is None else suite[0]
    checks.update(check_compile_and_capture(device, shape, args.smoke))
    pixel_checks, pixel_times = check_pixel_class_sums(device, [(100, 5, 9)] if args.smoke else PIXELS, rounds,
                                                       4 if args.smoke else None)
    checks.update(pixel_checks)
    times = time_prior_step(device, shape, rounds, args.smoke)
    fraction, achieved, peak, how = bandwidth(device, shape, rounds)
    ratio = None if args.skip_resnet else resnet_ratio(args.smoke)

    name = torch.cuda.get_device_name(device) if cuda else f"CPU ({platform.machine()}), Triton interpreter"
    import triton

    versions = f"torch {torch.__version__}, triton {triton.__version__}, CUDA {torch.version.cuda}, " \
               f"python {platform.python_version()}, adarand {getattr(adarand, '__version__', '?')}"
    mark = {True: "pass", False: "FAIL", None: "not run"}
    lines = [f"# GPU check{' (smoke: toy sizes)' if args.smoke else ''}", "",
             f"`python tools/check_gpu.py {' '.join(argv if argv is not None else sys.argv[1:])}`".rstrip(), "",
             f"{name}; {versions}; {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; "
             f"shape B, C, D = {shape}", "", "| check | result |", "|---|---|"]
    lines += [f"| {k} | {mark[v]} |" for k, v in checks.items()]
    lines += ["", "| class sums, 70 % one class (median ms of interleaved rounds) | row blocks | PyTorch (index_add_) | "
              "Triton | Triton, one row block |", "|---|---|---|---|---|"]
    lines += [f"| {k} | {v['row_blocks']} | {v['torch']:.3f} | {v['triton']:.3f} | {v['triton_1block']:.3f} |"
              for k, v in pixel_times.items()]
    lines += ["", "| prior step (reg.step: EMA + prior update), median of interleaved rounds | ms |", "|---|---|"]
    lines += [f"| {k} | {v:.3f} |" for k, v in times.items()]
    lines += ["", f"Fused prior update: {achieved:.1f} GB/s, {100 * fraction:.1f} % of the peak {peak:.0f} GB/s "
              f"({how}).", ""]
    if ratio is not None:
        if "error" in ratio:
            lines.append(f"ResNet-50 step ratio: not measured ({ratio['error'][-200:]})")
        else:
            lines.append(f"ResNet-50 training step, AdaRand / FT: {ratio['time_ratio']:.3f} "
                         f"[{ratio['ci_low']:.3f}, {ratio['ci_high']:.3f}] (95 % interval, paired rounds; "
                         f"batch {ratio['batch']}, {ratio['size']} px)")
    text = "\n".join(lines) + "\n"
    failed = [k for k, v in checks.items() if v is False]
    summary = {"device": name, "checks_failed": failed, "prior_step_ms": {k: round(v, 4) for k, v in times.items()},
               "class_sums_ms": {k: {p: round(t, 4) for p, t in v.items()} for k, v in pixel_times.items()},
               "bandwidth_fraction": round(fraction, 4),
               "resnet50_ratio": None if ratio is None or "error" in ratio else
               [ratio["time_ratio"], ratio["ci_low"], ratio["ci_high"]]}
    write_report(out, text, text, summary)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
