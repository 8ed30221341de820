"""Issue 30, item 8: the PCA plot's class legend and axis labels, and summarize's warning on a table mixing
budgets; on run directories written here (results.json, config.yaml, features_test.pt)."""
import json
import re

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from adarand_projects.paper import plots, summary


def write_run(run_dir, classes=("cat", "dog", "bird"), per_class=20, epochs=10, fraction=1.0, batch_size=64,
              method="ft", top1=0.5):
    """A finished run: test features spread 3 : 2 : 0.1 along three axes, shifted per class."""
    run_dir.mkdir(parents=True)
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(len(classes)).repeat_interleave(per_class)
    features = torch.randn(len(labels), 3, generator=generator) * torch.tensor([3.0, 2.0, 0.1]) + labels[:, None]
    torch.save({"features": features, "labels": labels, "classes": list(classes)}, run_dir / "features_test.pt")
    (run_dir / "results.json").write_text(json.dumps({"method": method, "dataset": "cars", "fraction": fraction,
                                                      "epochs": epochs, "test_top1": top1}))
    (run_dir / "config.yaml").write_text(f"SOLVER:\n  BATCH_SIZE: {batch_size}\n  EPOCHS: {epochs}\n")
    return run_dir, features


def test_pca_plot_has_a_class_legend_and_explained_variance_on_its_axes(tmp_path):
    run, features = write_run(tmp_path / "ft")
    other, _ = write_run(tmp_path / "adarand", method="adarand")
    fig = plots.pca_figure([str(run), str(other)], ["FT", "AdaRand"])
    centred = features.double() - features.double().mean(0)
    variance = np.sort(np.linalg.eigvalsh(np.cov(centred.numpy().T)))[::-1]
    share = 100 * variance / variance.sum()
    for ax in fig.axes:
        assert ax.get_xlabel() == f"PC1 ({share[0]:.1f} % variance)"
        assert ax.get_ylabel() == f"PC2 ({share[1]:.1f} % variance)"
    (legend,) = fig.legends
    assert legend.get_title().get_text() == "class"
    assert [t.get_text() for t in legend.get_texts()] == ["cat", "dog", "bird"]
    plt.close(fig)
    plots.plot_pca([str(run), str(other)], ["FT", "AdaRand"], str(tmp_path / "pca.png"))
    assert (tmp_path / "pca.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_pca_legend_of_many_classes_shows_ids_and_is_capped(tmp_path):
    names = [f"class number {i}" for i in range(45)]
    run, _ = write_run(tmp_path / "ft", classes=names, per_class=3)
    fig = plots.pca_figure([str(run)], ["FT"])
    texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert texts == [str(i) for i in range(plots.MAX_LEGEND - 1)] + ["… (45 classes)"]
    colours = [tuple(c.get_facecolor()[0]) for c in fig.axes[0].collections]
    assert len(set(colours)) == 45  # one colour per class
    plt.close(fig)
    assert plots.class_legend_entries(["a" * 30, "b"]) == ["a" * 23 + "…", "b"]  # long names are cut


def test_summary_warns_when_a_column_mixes_budgets(tmp_path, capsys):
    write_run(tmp_path / "ft_s0", epochs=200)
    write_run(tmp_path / "ft_s1", epochs=200)
    write_run(tmp_path / "adarand_s0", epochs=2, batch_size=8, method="adarand")
    write_run(tmp_path / "cars10", fraction=0.1, epochs=5)  # another column: its own budget is no mix
    table = summary.main([str(tmp_path)])
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1, err
    assert re.fullmatch(r"warning: the table mixes runs of different budgets, cars: epochs 2 \(.*adarand_s0\) vs "
                        r"200 \(.*ft_s0, .*ft_s1\); cars: batch size 8 \(.*adarand_s0\) vs 64 \(.*ft_s0, .*ft_s1\)",
                        err[0]), err[0]
    assert "cars@0.1" in table


def test_summary_of_one_budget_does_not_warn(tmp_path, capsys):
    write_run(tmp_path / "ft")
    write_run(tmp_path / "adarand", method="adarand")
    summary.main([str(tmp_path)])
    assert capsys.readouterr().err == ""
