"""AdaRand's reg.step before and after the autograd-free prior update (issue 21): paired, interleaved CPU time.

    taskset -c 1 env OMP_NUM_THREADS=1 python tools/bench/prior_update_before_after.py [ROUNDS=40]

"former" re-states the step as it was at commit 64560c3 (EMA, autograd of L_mean + L_dist,
Adam with host-side scalars, the skip guard by clone + where); "new" is ``reg.step``; "compiled"
is ``torch.compile(reg.step, fullgraph=True)``. PyTorch path, one thread, process CPU time,
rounds round-robin (``adarand_projects.bench.timing``), ratios with 95 % bootstrap intervals.
Results: benchmarks/prior_update.md.
"""
import json
import sys

import torch

import adarand
from adarand_projects.bench.builders import seeded_adarand
from adarand_projects.bench.timing import describe, median_ms, paired_ratio, round_robin, timed_call

SHAPES = (("cars-r50", (64, 196, 2048)), ("imagenet-vitb", (64, 1000, 768)))


def former_step(reg, features, labels, t):
    """The step as it was before this branch (commit 64560c3): EMA, autograd of L, Adam with host scalars, skip guard."""
    reg.check_inputs(features, labels)
    applied = reg.prior.update_running_mean(features, labels)
    with torch.enable_grad():
        mu = reg.prior.mu.detach().requires_grad_(True)
        loss = reg.prior.prior_loss(True, True, mu=mu)
        (grad,) = torch.autograd.grad(loss, mu)
    opt = reg.prior.optimizer
    state = (reg.prior.mu, opt.exp_avg, opt.exp_avg_sq)
    before = [x.clone() for x in state]
    with torch.no_grad():
        lr = opt.lr * adarand.schedules.lr_factor("cosine_7_16", t - 1, opt.total_steps)
        opt.exp_avg.lerp_(grad, 0.1)
        opt.exp_avg_sq.mul_(0.999).addcmul_(grad, grad, value=0.001)
        denom = (opt.exp_avg_sq / (1 - 0.999**t)).sqrt_().add_(1e-8)
        reg.prior.mu.addcdiv_(opt.exp_avg, denom, value=-lr / (1 - 0.9**t))
        opt.num_steps.fill_(t)
        for x, old in zip(state, before):
            x.copy_(torch.where(applied, x, old))
        reg.prior.skipped_batches += (~applied).to(reg.prior.skipped_batches.dtype)
    return loss.detach()


def cpu_time(fn):
    """Process CPU seconds of one call."""
    return timed_call(fn)[1]


def measure(name, shape, rounds):
    """Former, new and compiled step of one shape, round-robin; {key: figures}, printed as they come."""
    g = torch.Generator().manual_seed(1)
    f = torch.randn(shape[0], shape[2], generator=g)
    y = torch.randint(0, shape[1], (shape[0],), generator=g)
    old, new, compiled = (seeded_adarand(*shape[1:], total_steps=10000) for _ in range(3))
    compiled_step = torch.compile(compiled.step, fullgraph=True)
    steps = {"t": 0}

    def run_old():
        steps["t"] += 1
        return cpu_time(lambda: former_step(old, f, y, steps["t"]))

    times = round_robin({"former": run_old, "new": lambda: cpu_time(lambda: new.step(f, y)),
                         "compiled": lambda: cpu_time(lambda: compiled_step(f, y))}, rounds, warmup=3)
    med = {k: median_ms(v) for k, v in times.items()}
    out = {}
    for k in ("new", "compiled"):
        r = paired_ratio(times["former"], times[k])
        print(f"{name} {shape}: former {med['former']:.2f} ms, {k} {med[k]:.2f} ms CPU; {k}/former {describe(r)}",
              flush=True)
        out[f"{name}_{k}"] = {"former_ms": med["former"], "ms": med[k], **r}
    return out


def main(rounds=30):
    torch.set_num_threads(1)
    adarand.set_backend("torch")
    out = {}
    for name, shape in SHAPES:
        out.update(measure(name, shape, rounds))
    print(json.dumps(out))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 30)
