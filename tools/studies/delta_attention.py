"""How far from uniform DELTA's channel attention is on a config's pre-trained backbone.

    python tools/studies/delta_attention.py --config-file configs/classification/digits_mobilenetv2_ft.yaml \
        --layers features.3.conv.2 features.6.conv.2 features.13.conv.2 features.17.conv.2

Computes the loss increases once (``baselines.starting_loss_increase``: a head fitted on the frozen
starting features of the training split, BASELINE.DELTA_ATTENTION_IMAGES probe images, BatchNorm statistics
as BASELINE.DELTA_ATTENTION_BN says) and prints, per
attention mode and layer, the channel count and the max / median / min of the weights W_jc (mean 1),
as one JSON line per layer.
"""
import argparse
import json

import torch

from adarand.classification import baselines, build
from adarand.classification.config import load_cfg


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--layers", nargs="*", default=[], help="backbone submodules (default: baselines.delta_layers)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = parser.parse_args(argv)
    cfg = load_cfg(args.config_file, args.opts)
    torch.manual_seed(cfg.SEED)
    raw = build.raw_train_set(cfg)
    model = build.build_model(cfg, raw.num_classes).eval()
    data = build.build_data(cfg, raw, *build.normalization(cfg, model))
    layers = args.layers or baselines.delta_layers(model.backbone)
    fit, probe = build.baseline_data(cfg, data)
    increase = baselines.starting_loss_increase(model.backbone, layers, data.num_classes, fit, probe,
                                                bn_stats=cfg.BASELINE.DELTA_ATTENTION_BN)
    for mode in baselines.DELTA.ATTENTION[:2]:
        for name, d in zip(layers, increase):
            w = baselines.attention_weights(d, mode)
            print(json.dumps({"attention": mode, "layer": name or "<penultimate>", "channels": w.numel(),
                              "max": round(w.max().item(), 4), "median": round(w.median().item(), 4),
                              "min": round(w.min().item(), 4), "max_loss_increase": float(f"{d.max().item():.3g}")}))


if __name__ == "__main__":
    main()
