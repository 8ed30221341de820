"""The paper's feature plots of finished runs (``tools/plot_features.py``, whose --help says what they show):
``fig2_diagnostics.png`` (Fig. 2 measures per epoch, from metrics.jsonl) and ``fig3_pca.png``
(2-D PCA of the test features, Fig. 3).
"""
import argparse
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
import torch  # noqa: E402

from adarand.files import load_torch, save_figure  # noqa: E402

from adarand.classification.run_log import read_metrics, read_results  # noqa: E402

PAPER_PANELS = [("train_mean_feature_norm", "feature norm ||mean f||"),
                ("train_pairwise_entropy", "feature entropy H(Z) (Eq. 4)"),
                ("train_ce_weight_grad_norm", "CE gradient norm ||dL/dW||")]
GAUSSIAN_PANELS = [("val_gaussian_entropy", "Gaussian H(Z), val (ours)"),
                   ("val_gaussian_mi", "Gaussian I(Z; Y), val (ours)")]
MAX_LEGEND = 20  # entries of the PCA plot's class legend


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
    """Projection on the top two principal directions (SVD of the centred features), and the share of
    the variance each explains."""
    centred = features.double() - features.double().mean(0)
    _, singular, vh = torch.linalg.svd(centred, full_matrices=False)
    variance = singular.square()
    return (centred @ vh[:2].T).numpy(), (variance[:2] / variance.sum()).tolist()


def class_legend_entries(classes, limit=MAX_LEGEND):
    """Legend labels of the classes: their names, or their ids when there are more than ``limit``; at
    most ``limit`` entries, the last then "… (N classes)"."""
    names = [str(c) for c in classes] if len(classes) <= limit else [str(i) for i in range(len(classes))]
    if len(names) > limit:
        names = names[:limit - 1] + [f"… ({len(classes)} classes)"]
    return [n if len(n) <= 24 else n[:23] + "…" for n in names]


def class_colors(num_classes):
    """One colour per class: tab10 / tab20 up to 10 / 20 classes, else evenly spaced on a rainbow."""
    if num_classes <= 20:
        cmap = plt.get_cmap("tab10" if num_classes <= 10 else "tab20")
        return [cmap(i) for i in range(num_classes)]
    return [plt.get_cmap("turbo")(i / (num_classes - 1)) for i in range(num_classes)]


def pca_figure(run_dirs, labels):
    """One panel per run of its test features on their first two principal components (axes labelled
    with the variance each explains), coloured by class, with one class legend for all panels."""
    fig, axes = plt.subplots(1, len(run_dirs), figsize=(4 * len(run_dirs), 4), squeeze=False)
    for ax, run_dir, label in zip(axes[0], run_dirs, labels):
        file = os.path.join(run_dir, "features_test.pt")
        if not os.path.isfile(file):
            raise FileNotFoundError(f"{run_dir}: no features_test.pt (the run has not finished)")
        saved = load_torch(file, what="features file")
        xy, explained = pca_2d(saved["features"])
        classes = saved.get("classes") or [str(c) for c in range(int(saved["labels"].max()) + 1)]
        colors, y = class_colors(len(classes)), saved["labels"].numpy()
        handles = [ax.scatter(xy[y == c, 0], xy[y == c, 1], color=colors[c], s=6) for c in range(len(classes))]
        ax.set_title(label)
        ax.set_xlabel(f"PC1 ({100 * explained[0]:.1f} % variance)")
        ax.set_ylabel(f"PC2 ({100 * explained[1]:.1f} % variance)")
        ax.set_xticks([])
        ax.set_yticks([])
    entries = class_legend_entries(classes)
    handles = handles[:len(entries)] if len(entries) == len(classes) else \
        handles[:len(entries) - 1] + [Line2D([], [], linestyle="none")]  # "… (N classes)" has no marker
    fig.legend(handles, entries, title="class", loc="center left", bbox_to_anchor=(1.0, 0.5),
               markerscale=2.5, fontsize="small", frameon=False)
    fig.tight_layout()
    return fig


def plot_pca(run_dirs, labels, path):
    """:func:`pca_figure` saved to ``path``."""
    fig = pca_figure(run_dirs, labels)
    save_figure(fig, path, dpi=120, bbox_inches="tight")
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

