#!/usr/bin/env python
"""How far apart are the prior statistics of MODEL.ADARAND.STATS_ROIS "gt" and "proposals"?

    python tools/studies/compare_stats_rois.py --config-file configs/detection/<x>.yaml [KEY VALUE ...]

Loads MODEL.WEIGHTS, computes the box-head statistics (Eq. 9-10) twice, on the ground-truth
boxes and on the sampled foreground proposals (no training), and prints, over the classes
both see: the mean cosine between the two per-class means, the mean relative difference of
the means' norms and of the stds (||a - b|| / ||b||, b = gt), and the ROI counts; the last
line is the same as JSON.
"""
import json

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.engine import default_argument_parser
from detectron2.modeling import build_model

from adarand.detection import compute_box_head_stats, setup_cfg
from adarand.detection.trainer import check_weights


def compare(gt, proposals):
    """Mean over the classes both statistics saw of cos(mean), relative norm and std differences."""
    seen = (gt.count > 0) & (proposals.count > 0)
    g_mean, p_mean, g_std, p_std = (t[seen].double() for t in (gt.mean, proposals.mean, gt.std, proposals.std))
    return {
        "classes": int(seen.sum()),
        "mean_cosine": float(torch.nn.functional.cosine_similarity(g_mean, p_mean, dim=1).mean()),
        "mean_norm_rel_diff": float(((p_mean.norm(dim=1) - g_mean.norm(dim=1)) / g_mean.norm(dim=1)).mean()),
        "std_rel_diff": float(((p_std - g_std).norm(dim=1) / g_std.norm(dim=1)).mean()),
        "std_norm_ratio": float((p_std.norm(dim=1) / g_std.norm(dim=1)).mean()),
        "gt_rois": int(gt.count.sum()),
        "proposal_rois": int(proposals.count.sum()),
    }


def main(args):
    base, results = setup_cfg(args), {}
    for rois in ("gt", "proposals"):
        cfg = base.clone()
        cfg.defrost()
        cfg.MODEL.ADARAND.STATS_ROIS = rois
        model = build_model(cfg)
        check_weights(cfg.MODEL.WEIGHTS)
        DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
        torch.manual_seed(cfg.SEED if cfg.SEED >= 0 else 0)  # the ROI sampler draws at random
        results[rois] = compute_box_head_stats(cfg, model)
    for branch, (gt, proposals) in enumerate(zip(results["gt"], results["proposals"])):
        row = compare(gt, proposals)
        print(f"box branch {branch}: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                                   for k, v in row.items()))
    print(json.dumps([compare(g, p) for g, p in zip(results["gt"], results["proposals"])]))


if __name__ == "__main__":
    main(default_argument_parser().parse_args())
