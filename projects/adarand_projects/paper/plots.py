"""The paper's feature plots of finished runs (``tools/plot_features.py``, whose --help says what they show):
``fig2_diagnostics.png`` (Fig. 2 measures per epoch, from metrics.jsonl) and ``fig3_pca.png``
(2-D PCA of the test features, Fig. 3).
"""
import argparse
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from adarand.files import load_torch, save_figure  # noqa: E402

from adarand.classification.run_log import read_metrics, read_results  # noqa: E402

PAPER_PANELS = [("train_mean_feature_norm", "feature norm ||mean f||"),
                ("train_pairwise_entropy", "feature entropy H(Z) (Eq. 4)"),
                ("train_ce_weight_grad_norm", "CE gradient norm ||dL/dW||")]
GAUSSIAN_PANELS = [("val_gaussian_entropy", "Gaussian H(Z), val (ours)"),
                   ("val_gaussian_mi", "Gaussian I(Z; Y), val (ours)")]


def run_label(run_dir):
    """The run's method (results.json), else its directory name."""
    if os.path.isfile(os.path.join(run_dir, "results.json")):
        return read_results(run_dir)["method"]
    return os.path.basename(os.path.normpath(run_dir))


def series(records, key):
    """(epochs, values) of ``key`` over the records that have it."""
    points = [(r["epoch"], r[key]) for r in records if key in r]
    return [p[0] for p in points], [p[1] for p in points]


def plot_diagnostics(run_dirs, labels, path, panels=PAPER_PANELS):
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2))
    for run_dir, label in zip(run_dirs, labels):
        records = read_metrics(run_dir)
        for ax, (key, title) in zip(axes, panels):
            epochs, values = series(records, key)
            if not epochs:
                raise KeyError(f"{run_dir}/metrics.jsonl has no {key} (train with DIAGNOSTICS True; "
                               "val_* columns need DATASET.VAL_FRACTION > 0)")
            ax.plot(epochs, values, marker="o", markersize=3, label=label)
            ax.set_title(title)
            ax.set_xlabel("epoch")
    axes[0].legend()
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
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
    save_figure(fig, path, dpi=120)
    plt.close(fig)


def main(argv=None, description=None):
    """``tools/plot_features.py``: write both figures; returns their paths."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="run directories of tools/train_cls.py")
    parser.add_argument("--out-dir", default=".", help="where the PNG files go")
    parser.add_argument("--labels", nargs="*", default=None, help="legend labels (default: each run's method)")
    parser.add_argument("--gaussian", action="store_true",
                        help="also draw our Gaussian-fit entropy and MI of the validation features")
    args = parser.parse_args(argv)
    labels = args.labels or [run_label(r) for r in args.runs]
    if len(labels) != len(args.runs):
        parser.error(f"{len(labels)} labels for {len(args.runs)} runs")
    os.makedirs(args.out_dir, exist_ok=True)
    outputs = [os.path.join(args.out_dir, "fig2_diagnostics.png"), os.path.join(args.out_dir, "fig3_pca.png")]
    plot_diagnostics(args.runs, labels, outputs[0], PAPER_PANELS + (GAUSSIAN_PANELS if args.gaussian else []))
    plot_pca(args.runs, labels, outputs[1])
    print("\n".join(outputs))
    return outputs

