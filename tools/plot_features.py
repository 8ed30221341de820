#!/usr/bin/env python
"""The paper's feature plots from run directories of tools/train_cls.py.

    python tools/plot_features.py RUN_DIR [RUN_DIR ...] --out-dir figures [--labels FT AdaRand]

fig2_diagnostics.png: feature norm, feature entropy, CE gradient norm w.r.t. the features
and mutual information I(Z;Y) per epoch (from metrics.jsonl; validation features, or test
features when a run has no validation split), one line per run (Fig. 2).
fig3_pca.png: 2-D PCA of each run's test features (features_test.pt), coloured by class (Fig. 3).
"""
import argparse
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from adarand.files import load_torch  # noqa: E402

PANELS = [("feature_norm", "feature norm"), ("feature_entropy", "feature entropy H(Z)"),
          ("ce_grad_norm", "CE gradient norm"), ("mutual_information", "I(Z; Y)")]


def run_label(run_dir):
    path = os.path.join(run_dir, "results.json")
    if os.path.isfile(path):
        with open(path) as f:
            return json.load(f)["method"]
    return os.path.basename(os.path.normpath(run_dir))


def read_metrics(run_dir):
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{run_dir}: no metrics.jsonl (not a tools/train_cls.py run directory?)")
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def series(records, name):
    """(epochs, values) of ``val_<name>`` or else ``test_<name>``."""
    for prefix in ("val_", "test_"):
        points = [(r["epoch"], r[prefix + name]) for r in records if prefix + name in r]
        if points:
            return [p[0] for p in points], [p[1] for p in points]
    return [], []


def plot_diagnostics(run_dirs, labels, path):
    fig, axes = plt.subplots(1, len(PANELS), figsize=(4 * len(PANELS), 3.2))
    for run_dir, label in zip(run_dirs, labels):
        records = read_metrics(run_dir)
        for ax, (key, title) in zip(axes, PANELS):
            epochs, values = series(records, key)
            if not epochs:
                raise KeyError(f"{run_dir}/metrics.jsonl has no {key} (train with DIAGNOSTICS True)")
            ax.plot(epochs, values, marker="o", markersize=3, label=label)
            ax.set_title(title)
            ax.set_xlabel("epoch")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def pca_2d(features):
    """Projection on the top two principal directions (SVD of the centred features)."""
    centred = features.double() - features.double().mean(0)
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    return (centred @ vh[:2].T).numpy()


def plot_pca(run_dirs, labels, path):
    fig, axes = plt.subplots(1, len(run_dirs), figsize=(4 * len(run_dirs), 4), squeeze=False)
    for ax, run_dir, label in zip(axes[0], run_dirs, labels):
        file = os.path.join(run_dir, "features_test.pt")
        if not os.path.isfile(file):
            raise FileNotFoundError(f"{run_dir}: no features_test.pt (the run has not finished)")
        saved = load_torch(file, what="features file")
        xy = pca_2d(saved["features"])
        ax.scatter(xy[:, 0], xy[:, 1], c=saved["labels"].numpy(), cmap="tab10", s=6)
        ax.set_title(label)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="run directories of tools/train_cls.py")
    parser.add_argument("--out-dir", default=".", help="where the PNG files go")
    parser.add_argument("--labels", nargs="*", default=None, help="legend labels (default: each run's method)")
    args = parser.parse_args(argv)
    labels = args.labels or [run_label(r) for r in args.runs]
    if len(labels) != len(args.runs):
        parser.error(f"{len(labels)} labels for {len(args.runs)} runs")
    os.makedirs(args.out_dir, exist_ok=True)
    outputs = [os.path.join(args.out_dir, "fig2_diagnostics.png"), os.path.join(args.out_dir, "fig3_pca.png")]
    plot_diagnostics(args.runs, labels, outputs[0])
    plot_pca(args.runs, labels, outputs[1])
    print("\n".join(outputs))
    return outputs


if __name__ == "__main__":
    main()
