"""adarand.dense: the cell-labelling rule against a float64 loop, exact per-class cell statistics, and the
on-device pixel sampler (fixed shapes, valid cells first, class balance, its own generator only)."""
import math
import re
import runpy
from pathlib import Path

import pytest
import torch

import adarand
from adarand import IGNORE_INDEX
from adarand.dense import PixelSampling, cell_labels, cell_rows, gather_pixels, sample_pixels


def reference_cell_labels(label_map, height, width, ignore_index=255):
    """Loop: cell (h, w) reads the pixel floor((h + 0.5) H' / H), floor((w + 0.5) W' / W), in float64."""
    batch, rows, cols = label_map.shape
    out = torch.empty(batch, height, width, dtype=torch.int64)
    for b in range(batch):
        for h in range(height):
            for w in range(width):
                value = int(label_map[b, math.floor((h + 0.5) * rows / height), math.floor((w + 0.5) * cols / width)])
                out[b, h, w] = IGNORE_INDEX if value == ignore_index else value
    return out


@pytest.mark.parametrize("source,grid", [((8, 8), (8, 8)), ((16, 16), (8, 8)), ((32, 32), (8, 8)), ((33, 33), (8, 8)),
                                         ((33, 50), (5, 7)), ((7, 9), (1, 1)), ((512, 500), (64, 63))])
def test_cell_labels_follow_the_centre_rule(source, grid):
    g = torch.Generator().manual_seed(sum(source) + sum(grid))
    label_map = torch.randint(0, 4, (2, *source), generator=g)
    label_map[torch.rand(label_map.shape, generator=g) < 0.2] = 255
    got = cell_labels(label_map.to(torch.uint8), grid)  # a uint8 mask, as read from a PNG
    assert got.dtype == torch.int64 and got.shape == (2, *grid)
    assert torch.equal(got, reference_cell_labels(label_map, *grid))
    assert (got == IGNORE_INDEX).any() or grid == (1, 1)


def test_equal_resolution_is_the_identity_and_ignore_none_keeps_every_value():
    label_map = torch.arange(2 * 6 * 5).reshape(2, 6, 5)
    label_map[1, 2, 3] = 255
    assert torch.equal(cell_labels(label_map, (6, 5), ignore_index=None), label_map)
    assert (cell_labels(label_map, (6, 5)) == IGNORE_INDEX).sum() == (label_map == 255).sum() == 1


def test_cell_labels_refuse_a_coarser_or_float_map():
    with pytest.raises(ValueError, match=r"coarser than the feature grid \(8 x 8\)"):
        cell_labels(torch.zeros(1, 7, 8, dtype=torch.int64), (8, 8))
    with pytest.raises(ValueError, match="integers"):
        cell_labels(torch.zeros(1, 8, 8), (8, 8))
    with pytest.raises(ValueError, match="integers"):
        cell_labels(torch.zeros(8, 8, dtype=torch.int64), (8, 8))


def test_per_class_cell_statistics_equal_a_float64_reference():
    """compute_class_stats(rows=...) over every labelled cell (ignore excluded), against float64 loops."""
    g = torch.Generator().manual_seed(0)
    num_classes, dim = 3, 4
    batches = []
    for _ in range(3):
        label_map = torch.randint(0, num_classes, (2, 33, 33), generator=g)
        label_map[:, :5] = 255
        batches.append((torch.randn(2, dim, 8, 8, generator=g), label_map))

    def rows(features, label_map):
        return cell_rows(features, cell_labels(label_map, features.shape[-2:]))

    stats = adarand.compute_class_stats(lambda features: features, batches, num_classes, progress=False, rows=rows)
    per_class = {c: [] for c in range(num_classes)}
    for features, label_map in batches:
        labels = reference_cell_labels(label_map, 8, 8)
        for b in range(2):
            for h in range(8):
                for w in range(8):
                    if labels[b, h, w] != IGNORE_INDEX:
                        per_class[int(labels[b, h, w])].append(features[b, :, h, w].double())
    for c, samples in per_class.items():
        z = torch.stack(samples)
        assert int(stats.count[c]) == len(samples)
        torch.testing.assert_close(stats.mean[c], z.mean(0).float(), rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(stats.std[c], z.std(0, unbiased=False).float(), rtol=1e-5, atol=1e-6)
    assert int(stats.count.sum()) < 3 * 2 * 64  # the ignored top rows are not counted


def test_sampler_shapes_and_only_labelled_cells_when_there_are_enough():
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 3, (4, 100), generator=g)
    labels[:, :50] = IGNORE_INDEX
    for balance in ("uniform", "class"):
        index = sample_pixels(labels, 30, 3, balance, torch.Generator().manual_seed(1))
        assert index.shape == (4, 30) and index.dtype == torch.int64
        assert all(len(set(row.tolist())) == 30 for row in index)  # distinct within an image
        assert (labels.gather(1, index) != IGNORE_INDEX).all()
    assert sample_pixels(labels, 500, 3, generator=torch.Generator()).shape == (4, 100)  # P = min(P, N)


def test_an_image_with_few_labelled_cells_gives_all_of_them_once_and_the_rest_ignored():
    labels = torch.full((2, 50), IGNORE_INDEX)
    labels[0, [3, 17, 40]] = torch.tensor([0, 2, 1])
    for balance in ("uniform", "class"):
        index = sample_pixels(labels, 10, 3, balance, torch.Generator().manual_seed(2))
        picked = labels.gather(1, index)
        assert sorted(index[0][picked[0] != IGNORE_INDEX].tolist()) == [3, 17, 40]
        assert (picked[1] == IGNORE_INDEX).all()  # an image without labelled cells: only ignored rows


def test_class_balance_gives_a_small_class_its_share():
    """400 cells, 20 of class 1 and the rest background: of 20 draws, uniform gives class 1 about 1, class-balanced
    about half (sampling without replacement, so a little less)."""
    labels = torch.zeros(200, 400, dtype=torch.int64)
    labels[:, 100:120] = 1
    labels[:, :10] = IGNORE_INDEX
    share = {}
    for balance in ("uniform", "class"):
        index = sample_pixels(labels, 20, 2, balance, torch.Generator().manual_seed(3))
        share[balance] = (labels.gather(1, index) == 1).sum(1).double().mean().item()
    assert 0.5 < share["uniform"] < 1.6, share
    assert 7.5 < share["class"] < 10.5, share


def test_class_balance_draws_labels_outside_the_classes_so_the_regularizer_sees_them():
    labels = torch.zeros(1, 100, dtype=torch.int64)
    labels[0, 7] = 9  # not a class of C = 2 and not IGNORE_INDEX: its own bucket
    index = sample_pixels(labels, 4, 2, "class", torch.Generator().manual_seed(0))
    assert 7 in index[0].tolist()


def test_sampler_is_deterministic_given_its_generator_and_leaves_the_global_rng_alone():
    labels = torch.randint(0, 5, (3, 64), generator=torch.Generator().manual_seed(4))
    before = torch.get_rng_state()
    a = sample_pixels(labels, 16, 5, "class", torch.Generator().manual_seed(9))
    b = sample_pixels(labels, 16, 5, "class", torch.Generator().manual_seed(9))
    c = sample_pixels(labels, 16, 5, "class", torch.Generator().manual_seed(10))
    assert torch.equal(before, torch.get_rng_state())
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_gather_pixels_reads_the_cells_and_sends_gradients_back_to_them_only():
    g = torch.Generator().manual_seed(0)
    maps = torch.randn(2, 3, 4, 5, generator=g, requires_grad=True)
    index = torch.tensor([[0, 19, 7], [4, 5, 6]])
    rows = gather_pixels(maps, index)
    want = torch.stack([maps[b, :, int(i) // 5, int(i) % 5] for b in range(2) for i in index[b]])
    assert torch.equal(rows, want)
    rows.sum().backward()
    hit = torch.zeros(2, 20)
    hit.scatter_(1, index, 1.0)
    assert torch.equal(maps.grad, hit.reshape(2, 1, 4, 5).expand(2, 3, 4, 5))


def test_pixel_sampling_refuses_bad_options():
    with pytest.raises(ValueError, match="pixels_per_image must be an int >= 1"):
        PixelSampling(pixels_per_image=0)
    with pytest.raises(ValueError, match="pixels_per_image"):
        PixelSampling(pixels_per_image=2.5)
    with pytest.raises(ValueError, match=r"unknown balance 'area'.*uniform"):
        PixelSampling(balance="area")
    with pytest.raises(ValueError, match="ignore_index must be an int"):
        PixelSampling(ignore_index="255")


def test_rows_pair_each_drawn_cell_with_its_label():
    g = torch.Generator().manual_seed(5)
    features = torch.randn(2, 4, 6, 6, generator=g)
    logits = torch.randn(2, 3, 6, 6, generator=g)
    label_map = torch.randint(0, 3, (2, 12, 12), generator=g)
    sampling = PixelSampling(pixels_per_image=5)
    rows, logit_rows, labels, index = sampling.rows(features, logits, label_map, 3, torch.Generator().manual_seed(1))
    cells = cell_labels(label_map, (6, 6))
    for k in range(10):
        b, i = divmod(k, 5)
        h, w = divmod(int(index[b, i]), 6)
        assert torch.equal(rows[k], features[b, :, h, w]) and torch.equal(logit_rows[k], logits[b, :, h, w])
        assert labels[k] == cells[b, h, w]


def test_the_library_docs_dense_example_runs(tmp_path, monkeypatch, capsys):
    """docs/library.md's "Dense heads" example, as the script it is (torchvision's DeepLabV3 at 64 x 64)."""
    page = (Path(__file__).resolve().parents[1] / "docs" / "library.md").read_text()
    section = re.search(r"^## Dense heads.*?(?=^## )", page, flags=re.M | re.S).group(0)
    (code,) = re.findall(r"^```python\n(.*?)^```", section, flags=re.M | re.S)
    script = tmp_path / "dense_example.py"
    script.write_text(code)
    monkeypatch.chdir(tmp_path)
    runpy.run_path(str(script), run_name="__main__")
    assert "prior steps 3" in capsys.readouterr().out
