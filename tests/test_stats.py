import numpy as np
import pytest
import torch

from adarand import ClassStats, compute_class_stats

C, D = 3, 5


def loader(features, labels, batch_size=4):
    return [(features[i:i + batch_size], labels[i:i + batch_size]) for i in range(0, len(labels), batch_size)]


def test_streaming_stats_match_numpy():
    g = torch.Generator().manual_seed(0)
    features = torch.randn(23, D, generator=g) * 3 + 10
    labels = torch.tensor([0, 1, 2] * 7 + [1, 1])
    stats = compute_class_stats(torch.nn.Identity(), loader(features, labels), C, name="identity", progress=False)
    x, y = features.double().numpy(), labels.numpy()
    for c in range(C):
        np.testing.assert_allclose(stats.mean[c].numpy(), x[y == c].mean(0), rtol=1e-6)
        np.testing.assert_allclose(stats.std[c].numpy(), x[y == c].std(0, ddof=0), rtol=1e-5)
    np.testing.assert_allclose(stats.global_mean.numpy(), x.mean(0), rtol=1e-6)
    np.testing.assert_allclose(stats.global_std.numpy(), x.std(0), rtol=1e-5)
    assert stats.count.tolist() == [7, 9, 7] and stats.extractor == "identity"


def test_single_sample_class_has_zero_std_and_missing_class_is_named():
    features, labels = torch.randn(5, D), torch.tensor([0, 0, 0, 0, 2])
    with pytest.raises(ValueError, match=r"no sample of class\(es\) \[1\]"):
        compute_class_stats(torch.nn.Identity(), loader(features, labels), C, progress=False)
    stats = compute_class_stats(torch.nn.Identity(), loader(features, torch.tensor([0, 0, 1, 0, 2])), C, progress=False)
    assert torch.equal(stats.std[1], torch.zeros(D)) and torch.equal(stats.std[2], torch.zeros(D))
    torch.testing.assert_close(stats.mean[2], features[4])


def test_bad_features_and_labels_are_errors():
    with pytest.raises(ValueError, match="NaN/Inf"):
        compute_class_stats(torch.nn.Identity(), [(torch.tensor([[float("nan")] * D]), torch.tensor([0]))], C, progress=False)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        compute_class_stats(torch.nn.Identity(), [(torch.randn(2, D), torch.tensor([0, 3]))], C, progress=False)
    with pytest.raises(ValueError, match="loader is empty"):
        compute_class_stats(torch.nn.Identity(), [], C, progress=False)


def test_dict_inputs_go_to_the_device_tensor_by_tensor():
    features, labels = torch.randn(6, D), torch.arange(6) % C
    seen = []

    def extractor(inputs):
        seen.append((inputs["x"].device.type, inputs["extra"]["mask"].device.type, inputs["name"]))
        return features

    batch = {"x": features, "extra": {"mask": torch.ones(6)}, "name": "a"}
    stats = compute_class_stats(extractor, [(batch, labels)], C, device="meta", progress=False)
    assert seen == [("meta", "meta", "a")] and stats.count.tolist() == [2, 2, 2]


def test_save_load_round_trip_with_metadata(tmp_path):
    features, labels = torch.randn(12, D), torch.arange(12) % C
    stats = compute_class_stats(torch.nn.Identity(), loader(features, labels), C, name="net", progress=False)
    path = tmp_path / "sub" / "stats.pt"
    stats.save(path)
    assert [p.name for p in path.parent.iterdir()] == ["stats.pt"]  # no temporary file left behind
    loaded = ClassStats.load(path, num_classes=C, feat_dim=D)
    for name in ("mean", "std", "count", "global_mean", "global_std"):
        assert torch.equal(getattr(loaded, name), getattr(stats, name))
    assert loaded.extractor == "net" and loaded.count.tolist() == [4, 4, 4]
    with pytest.raises(ValueError, match="feat_dim=5, expected 7"):
        ClassStats.load(path, feat_dim=7)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        ClassStats.load(tmp_path / "missing.pt")
    torch.save({"something": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not an AdaRand class-statistics file"):
        ClassStats.load(tmp_path / "other.pt")


def test_missing_classes_allowed_on_request_get_zero_rows_that_never_move():
    from adarand import ClassStatsAccumulator, build_regularizer

    acc = ClassStatsAccumulator(C)
    features = torch.randn(6, D)
    acc.update(features, torch.tensor([0, 0, 2, 2, 2, 0]))
    stats = acc.finalize(allow_missing=True)
    assert stats.count.tolist() == [3, 0, 3]
    assert torch.equal(stats.mean[1], torch.zeros(D)) and torch.equal(stats.std[1], torch.zeros(D))
    torch.testing.assert_close(stats.mean[2], features[2:5].mean(0))
    reg = build_regularizer("adarand", num_classes=C, feat_dim=D)
    reg.init_from_stats(stats)
    for _ in range(3):
        reg.step(torch.randn(4, D), torch.tensor([0, 2, 2, 0]))
    assert torch.equal(reg.prior.mu[1], torch.zeros(D))  # the absent class's row stays zero
    assert torch.isfinite(reg.prior.mu).all() and not torch.equal(reg.prior.mu[0], stats.mean[0])
