#!/usr/bin/env python
"""Plot per-iteration probe values of tools/studies/diagnose_det.py runs, one curve per seed.

    python tools/studies/plot_stability.py --out docs/figures/detection_stability.png \\
        --key feat_sq --run "FT=output/diag/after/runs/none" \\
        --run "AdaRand, per fg ROI=output/diag/before/runs/adarand_MODEL.ADARAND.NORMALIZERregularized" ...

Each ``--run LABEL=PREFIX`` reads ``PREFIX_s<seed>/probe.json`` for every seed found; a
run that diverged ends with a cross at the top; values above 1e8 (or NaN) are drawn at 1e8.
"""
import argparse
import glob
import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from adarand.files import save_figure  # noqa: E402

CAP = 1e8


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", action="append", required=True, help="LABEL=PREFIX (PREFIX_s<seed>/probe.json)")
    p.add_argument("--key", default="feat_sq", help="probe key (feat_sq, feat_norm, grad_head/loss_adarand, ...)")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    fig, axes = plt.subplots(1, len(args.run), figsize=(4 * len(args.run), 3.2), sharey=True, squeeze=False)
    for ax, spec in zip(axes[0], args.run):
        label, _, prefix = spec.partition("=")
        for path in sorted(glob.glob(prefix + "_s*/probe.json")):
            with open(path) as f:
                run = json.load(f)
            rows = [r for r in run["rows"] if args.key in r]
            seed = path.rsplit("_s", 1)[1].split("/")[0]
            values = [min(r[args.key], CAP) if r[args.key] == r[args.key] else CAP for r in rows]
            line, = ax.plot([r["iter"] for r in rows], values, lw=1, label=f"seed {seed}")
            if run["diverged_at"] is not None and rows:
                ax.plot(rows[-1]["iter"], CAP, "x", color=line.get_color(), ms=8)
        ax.set_title(label, fontsize=9)
        ax.set_yscale("log")
        ax.set_xlabel("iteration")
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel(args.key)
    fig.tight_layout()
    save_figure(fig, args.out, dpi=110)


if __name__ == "__main__":
    main()
