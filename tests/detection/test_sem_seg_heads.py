"""AdaRand semantic-segmentation heads: Detectron2's own losses and predictions bit for bit with METHOD none,
loss_adarand_sem_seg against a float64 reference on the drawn pixels, the take-once record."""
import numpy as np
import pytest
import torch
from detectron2.modeling import build_backbone, build_sem_seg_head
from tiny import DEEPLAB_CONFIG, SEM_SEG_CONFIG, tiny_sem_seg_cfg

from adarand import IGNORE_INDEX
from adarand.detection import AdaRandPriorHook

# kind -> (config, Detectron2's head of the same architecture, overrides)
HEADS = {
    "fpn": (SEM_SEG_CONFIG, "SemSegFPNHead", {}),
    "deeplab_v3_plus": (DEEPLAB_CONFIG, "DeepLabV3PlusHead", {}),
    "deeplab_v3": (DEEPLAB_CONFIG, "DeepLabV3Head", {
        "MODEL.SEM_SEG_HEAD.NAME": "AdaRandDeepLabV3Head", "MODEL.SEM_SEG_HEAD.IN_FEATURES": ["res5"],
        "MODEL.RESNETS.OUT_FEATURES": ["res5"], "MODEL.SEM_SEG_HEAD.COMMON_STRIDE": 32}),
}
SIZE = (64, 96)


def _heads(tmp_path, kind, **extra):
    """(ours, Detectron2's with the same weights, backbone output shapes)."""
    config, stock_name, opts = HEADS[kind]
    cfg = tiny_sem_seg_cfg(tmp_path, config, **opts, **extra)
    shape = build_backbone(cfg).output_shape()
    torch.manual_seed(0)
    ours = build_sem_seg_head(cfg, shape)
    stock_cfg = cfg.clone()
    stock_cfg.MODEL.SEM_SEG_HEAD.NAME = stock_name
    stock = build_sem_seg_head(stock_cfg, shape)
    missing, unexpected = ours.load_state_dict(stock.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("adarand.") for k in missing)  # the prior (none for METHOD none)
    return ours, stock, shape


def _inputs(shape, in_features, batch=2, seed=1):
    """Random feature maps at the backbone's strides, and a padded label map with an ignore band."""
    g = torch.Generator().manual_seed(seed)
    features = {k: torch.randn(batch, shape[k].channels, SIZE[0] // shape[k].stride, SIZE[1] // shape[k].stride,
                               generator=g) for k in in_features}
    targets = torch.randint(0, 21, (batch,) + SIZE, generator=g)
    targets[:, :5] = 255
    return features, targets


@pytest.mark.parametrize("kind", sorted(HEADS))
def test_method_none_equals_the_stock_head_bit_for_bit(tmp_path, kind):
    ours, stock, shape = _heads(tmp_path, kind, **{"MODEL.ADARAND.METHOD": "none"})
    features, targets = _inputs(shape, ours.in_features)
    outputs = {}
    for name, head in (("stock", stock), ("ours", ours)):
        head.train()
        torch.manual_seed(5)  # the same dropout draws (DeepLab's ASPP)
        _, losses = head(features, targets)
        losses["loss_sem_seg"].backward()
        head.eval()
        outputs[name] = losses, {k: p.grad.clone() for k, p in head.named_parameters() if p.grad is not None}, \
            head(features)[0]
    (stock_losses, stock_grads, stock_pred), (our_losses, our_grads, our_pred) = outputs["stock"], outputs["ours"]
    assert set(our_losses) == set(stock_losses) | {"loss_adarand_sem_seg"}
    assert torch.equal(our_losses["loss_sem_seg"], stock_losses["loss_sem_seg"])
    assert our_losses["loss_adarand_sem_seg"].item() == 0.0
    assert our_grads.keys() == stock_grads.keys() and all(torch.equal(our_grads[k], stock_grads[k]) for k in our_grads)
    assert torch.equal(our_pred, stock_pred)


def _hand_cell_labels(targets, height, width):
    """The ground truth at each cell's centre, floor((i + 1/2) H' / H), from float64 arithmetic; ignore -> -1."""
    t = targets.numpy()
    rows = np.floor((np.arange(height) + 0.5) * t.shape[1] / height).astype(int)
    cols = np.floor((np.arange(width) + 0.5) * t.shape[2] / width).astype(int)
    labels = t[:, rows][:, :, cols].reshape(t.shape[0], -1)
    return np.where(labels == 255, -1, labels)


@pytest.mark.parametrize("kind", sorted(HEADS))
def test_loss_equals_a_float64_reference_on_the_drawn_pixels(tmp_path, kind):
    lam, pixels = 0.5, 32
    ours, _, shape = _heads(tmp_path, kind, **{"MODEL.ADARAND.METHOD": "adarand", "MODEL.ADARAND.LAMBDA": lam,
                                               "MODEL.ADARAND.PIXELS_PER_IMAGE": pixels})
    reg = ours.adarand.regularizer
    mu = torch.randn(reg.num_classes, reg.feat_dim, generator=torch.Generator().manual_seed(3))
    reg.prior.init_from_stats(mu, torch.zeros_like(mu))  # sigma = 0: every target r_i is mu_{y_i}
    features, targets = _inputs(shape, ours.in_features)
    ours.train()
    torch.manual_seed(5)
    _, losses = ours(features, targets)
    (drawn,) = ours.take_sampled_rows().values()
    assert ours.take_sampled_rows() == {}
    torch.manual_seed(5)
    with torch.no_grad():
        x = ours.dense_features(features)  # the features the predictor read, every cell
    batch, dim, height, width = x.shape
    pixels = min(pixels, height * width)  # DeepLabV3 at stride 32: 2 x 3 cells
    hand = _hand_cell_labels(targets, height, width)
    cells = x.permute(0, 2, 3, 1).reshape(batch, -1, dim).double()
    rows, labels = drawn.features.double().reshape(batch, pixels, dim), drawn.labels.reshape(batch, pixels)
    reference = []
    for b in range(batch):
        where = [(cells[b] == row).all(1).nonzero().flatten().tolist() for row in rows[b]]
        assert all(len(w) == 1 for w in where)  # each row is one cell of the image's feature map
        index = [w[0] for w in where]
        assert len(set(index)) == pixels and (hand[b][index] >= 0).all()  # distinct, labelled cells
        assert labels[b].tolist() == hand[b][index].tolist()  # labelled at their centre
        reference.append((cells[b][index] - mu.double()[labels[b]]).pow(2))
    expected = lam * torch.cat(reference).mean()
    torch.testing.assert_close(losses["loss_adarand_sem_seg"].double(), expected, rtol=1e-5, atol=0)
    assert not (drawn.labels == IGNORE_INDEX).any()


def test_an_untaken_record_is_an_error_naming_the_hook(tmp_path):
    ours, _, shape = _heads(tmp_path, "fpn", **{"MODEL.ADARAND.METHOD": "fnp"})
    features, targets = _inputs(shape, ours.in_features)
    ours.train()
    ours(features, targets)
    with torch.no_grad():
        ours(features, targets)  # PreciseBN-style forwards neither record nor check
    with pytest.raises(RuntimeError, match="never taken.*AdaRandPriorHook"):
        ours(features, targets)
    assert AdaRandPriorHook  # the name the error gives is the plugin's hook


@pytest.mark.parametrize("key, value, expected", [("PIXELS_PER_IMAGE", 0, "integer >= 1"),
                                                  ("PIXELS_PER_IMAGE", -3, "integer >= 1"),
                                                  ("PIXEL_BALANCE", "area", "one of")])
def test_bad_pixel_keys_are_refused_naming_the_key(tmp_path, key, value, expected):
    with pytest.raises(ValueError, match=rf"MODEL\.ADARAND\.{key} = .*{expected}"):
        tiny_sem_seg_cfg(tmp_path, **{f"MODEL.ADARAND.{key}": value})


def test_statistics_are_float64_per_class_means_over_every_labelled_cell(fake_voc, tmp_path):
    """Eq. 9-10 for the dense head: every cell of the eval-mode features, labelled at its centre, ignore excluded."""
    from detectron2.modeling import build_model

    from adarand.detection import compute_box_head_stats
    from adarand.detection.prior_init import _images, _sem_seg_targets, build_stats_loader

    cfg = tiny_sem_seg_cfg(tmp_path, **{"MODEL.ADARAND.STATS_MAX_IMAGES": 3, "MODEL.ADARAND.ALLOW_MISSING_CLASSES": True})
    torch.manual_seed(0)
    model = build_model(cfg).train()
    (stats,) = compute_box_head_stats(cfg, model)
    assert model.training  # put back
    sums, counts = torch.zeros(21, 32, dtype=torch.float64), torch.zeros(21, dtype=torch.long)
    model.eval()
    with torch.no_grad():
        for batch in build_stats_loader(cfg):
            x = model.sem_seg_head.dense_features(model.backbone(_images(model, batch).tensor))
            hand = _hand_cell_labels(_sem_seg_targets(model, batch), *x.shape[-2:])[0]
            cells = x[0].flatten(1).t().double()
            for c in range(21):
                sums[c] += cells[torch.from_numpy(hand == c)].sum(0)
                counts[c] += int((hand == c).sum())
    assert torch.equal(stats.count, counts) and counts.sum() > 0
    seen = counts > 0
    torch.testing.assert_close(stats.mean[seen].double(), sums[seen] / counts[seen, None], rtol=1e-5, atol=1e-5)
