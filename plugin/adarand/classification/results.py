"""What a finished classification run reports: ``results.json`` (:func:`run_results`, the summary
table's row label :func:`method_name`) and the selected model's test features (``features_test.pt``),
written by :func:`write_results`. Read back with :mod:`adarand.classification.run_log`."""
import os
from typing import Any

import numpy as np
from fvcore.common.config import CfgNode

from adarand.files import save_torch, write_json

from .evaluation import Evaluation
from .storage import TrainingStorage


def method_name(cfg: CfgNode) -> str:
    """Row label of the summary table: the regularizer, plus the baseline when one is used."""
    parts = [cfg.MODEL.ADARAND.METHOD] if cfg.MODEL.ADARAND.METHOD != "none" else []
    parts += [cfg.BASELINE.METHOD] if cfg.BASELINE.METHOD else []
    return "+".join(parts) or "ft"


def run_results(cfg: CfgNode, storage: TrainingStorage, best_epoch: int, test: Evaluation, has_val: bool, world: int,
                config_changes: list[dict[str, Any]]) -> dict[str, Any]:
    """The results of a run: the selected model (of ``best_epoch``; by validation top-1 when ``has_val``,
    else the last epoch) and its ``test`` evaluation, the mean epoch and step times of ``storage.history``."""
    history = storage.history
    return {
        "method": method_name(cfg), "dataset": cfg.DATASET.NAME, "backbone": cfg.MODEL.BACKBONE,
        "seed": cfg.SEED, "fraction": cfg.DATASET.FRACTION, "epochs": cfg.SOLVER.EPOCHS,
        "selection": "best_val_top1" if has_val else "last_epoch",
        "best_epoch": best_epoch, "val_top1": storage.best_top1 if has_val else None,
        "test_top1": test.top1, "test_mean_class_acc": test.mean_class_acc,
        "time_per_epoch_s": float(np.mean([r["epoch_time_s"] for r in history])) if history else None,
        "step_time_s": float(np.mean([r["step_time_s"] for r in history])) if history else None,
        "world_size": world, "config_changes": config_changes,
    }


def write_results(output_dir: str, results: dict[str, Any], test: Evaluation, classes: list) -> None:
    """``features_test.pt`` (the test features, labels and class names, for PCA) and ``results.json``."""
    save_torch({"features": test.features, "labels": test.labels, "classes": classes},
               os.path.join(output_dir, "features_test.pt"))
    write_json(os.path.join(output_dir, "results.json"), results)
