#!/usr/bin/env python
"""Train a detection config under several regularizers and seeds with the box-head probe.

    python tools/studies/diagnose_det.py --config-file configs/detection/diag/small_random_init.yaml \\
        --dataset-root /tmp/fake_voc --methods none fnp adarand "adarand:MODEL.ADARAND.LAMBDA=0.1" \\
        --seeds 0 1 2 --iters 200 --out output/diag/small [KEY VALUE ...]

A method is ``NAME[:KEY=VALUE,...]`` (NAME = MODEL.ADARAND.METHOD, then extra overrides).
Writes ``<out>/iterations.csv`` (one row per method, seed and iteration: every
``probe/...`` value of :class:`adarand_projects.stability.diagnose.BoxHeadProbe`) and
``<out>/summary.json`` (per run: iteration of divergence or null, median and max of each
gradient norm, feature and prior norms at the start and the end). Finished runs are kept
(``<out>/runs/<method>_s<seed>/probe.json``) and skipped when the tool is run again.
``--sharpness`` measures instead, at iteration 0, the top Hessian eigenvalue of ``loss_cls`` and
``loss_adarand`` w.r.t. the box head and the backbone (``<out>/sharpness.json``).
"""
import argparse
import csv
import io
import json
import os
import statistics

from adarand.detection import load_detection_cfg, register_voc
from adarand_projects.stability.diagnose import loss_sharpness, run_diagnosis, seeded_trainer
from adarand.files import write_json, write_text


def parse_method(spec):
    """``NAME[:K=V,...]`` -> (label, [KEY, VALUE, ...])."""
    name, _, rest = spec.partition(":")
    opts = ["MODEL.ADARAND.METHOD", name]
    for item in filter(None, rest.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"method {spec!r}: expected KEY=VALUE after ':', got {item!r}")
        opts += [key, value]
    return spec, opts


def run_name(label):
    """A directory name for a method label: ``adarand:K=V,K2=V2`` -> ``adarand_KV_K2V2``."""
    return label.replace(":", "_").replace("=", "").replace(",", "_")


def build_cfg(args, method_opts, seed, output_dir):
    run_opts = ["SEED", str(seed), "SOLVER.MAX_ITER", str(args.iters), "OUTPUT_DIR", output_dir,
                "SOLVER.CHECKPOINT_PERIOD", "1000000", "DATASETS.TEST", "()"]  # training only: no evaluation
    cfg = load_detection_cfg(args.config_file, args.opts + method_opts + run_opts)
    cfg.freeze()
    return cfg


def summarize(rows, diverged):
    """Median / max of every gradient norm; first / last / max of the norms."""
    out = {"iterations": len(rows), "diverged_at": diverged}
    keys = sorted({k for r in rows for k in r if k != "iter"})
    for key in keys:
        values = [r[key] for r in rows if key in r]
        finite = [v for v in values if v == v and abs(v) != float("inf")]
        if key.startswith("grad_"):
            out[key] = {"median": statistics.median(finite) if finite else None, "max": max(finite, default=None)}
        elif key.startswith(("feat_", "prior_")):
            out[key] = {"first": values[0], "last": values[-1], "max": max(finite, default=None)}
    return out


def sharpness(args):
    """Hessian top eigenvalues at iteration 0 for every method and seed."""
    results = []
    for spec in args.methods:
        label, method_opts = parse_method(spec)
        for seed in args.seeds:
            run_dir = os.path.join(args.out, "sharpness", f"{run_name(label)}_s{seed}")
            trainer = seeded_trainer(build_cfg(args, method_opts, seed, run_dir))
            results.append({"method": label, "seed": seed, **loss_sharpness(trainer, seed=seed)})
            print(json.dumps(results[-1]), flush=True)
    write_json(os.path.join(args.out, "sharpness.json"), results)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True)
    p.add_argument("--dataset-root", default=None, help="VOC root (default $DETECTRON2_DATASETS or datasets)")
    p.add_argument("--methods", nargs="+", default=["none", "fnp", "adarand"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--iters", type=int, default=200)
    p.add_argument("--out", required=True)
    p.add_argument("--sharpness", action="store_true",
                   help="instead of training: top Hessian eigenvalue of loss_cls and loss_adarand w.r.t. the box "
                        "head and the backbone at the start of each run (<out>/sharpness.json)")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides for every run: KEY VALUE ...")
    args = p.parse_args(argv)
    register_voc(args.dataset_root)
    if args.sharpness:
        return sharpness(args)
    all_rows, summary = [], []
    for spec in args.methods:
        label, method_opts = parse_method(spec)
        for seed in args.seeds:
            run_dir = os.path.join(args.out, "runs", f"{run_name(label)}_s{seed}")
            done = os.path.join(run_dir, "probe.json")
            if os.path.isfile(done):
                with open(done) as f:
                    rows, diverged = json.load(f).values()
            else:
                rows, diverged = run_diagnosis(build_cfg(args, method_opts, seed, run_dir))
                write_json(done, {"rows": rows, "diverged_at": diverged})
            all_rows += [{"method": label, "seed": seed, **r} for r in rows]
            summary.append({"method": label, "seed": seed, **summarize(rows, diverged)})
            print(json.dumps({"method": label, "seed": seed, "diverged_at": diverged, "iterations": len(rows)}),
                  flush=True)
    fields = ["method", "seed", "iter"] + sorted({k for r in all_rows for k in r} - {"method", "seed", "iter"})
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=fields)
    writer.writeheader()
    writer.writerows(all_rows)
    write_text(os.path.join(args.out, "iterations.csv"), table.getvalue())
    write_json(os.path.join(args.out, "summary.json"), summary)


if __name__ == "__main__":
    main()
