"""A run directory's records: written by :class:`RunLog` (``metrics.jsonl``, one JSON object a
line, and TensorBoard scalars) and :func:`log_file` (``log.txt``, the console's log lines), read by
:func:`read_metrics`, :func:`read_results`, :func:`result_metric` and :func:`find_results`
(``results.json``, written by the trainer); :func:`epoch_line` is the console's line of an epoch.
The regularizer's values are named as in every integration (docs/logging.md): ``adarand/loss``,
``adarand/prior_loss``, ``adarand/skipped_batches``; files written before read with those names."""
import contextlib
import glob
import json
import logging
import math
import os
import sys
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from adarand.files import append_line, write_text

# metrics.jsonl keys written before the one logging vocabulary (docs/logging.md), and their names now
FORMER_KEYS = {"train_reg": "adarand/loss", "reg_skipped_batches": "adarand/skipped_batches"}

LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s: %(message)s"  # the console's and log.txt's


@contextlib.contextmanager
def log_file(output_dir: str) -> Iterator[None]:
    """Within the block the root logger's records also go to ``output_dir/log.txt`` (appended, so a
    resumed run continues it, as Detectron2's ``setup_logger``), in :data:`LOG_FORMAT`, the
    ``adarand`` loggers' from INFO up whatever the root's level; an exception that ends the block is
    written there with its traceback."""
    handler = logging.FileHandler(os.path.join(output_dir, "log.txt"))
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root, ours = logging.getLogger(), logging.getLogger("adarand")
    level = ours.level
    ours.setLevel(min(ours.getEffectiveLevel(), logging.INFO))
    root.addHandler(handler)
    try:
        yield
    except BaseException as err:
        handler.handle(root.makeRecord(__name__, logging.ERROR, __file__, 0, "run stopped: %s: %s",
                                       (type(err).__name__, err), sys.exc_info()))
        raise
    finally:
        root.removeHandler(handler)
        handler.close()
        ours.setLevel(level)


def epoch_line(record: dict, epochs: int, baseline: bool = False) -> str:
    """An epoch record in one line: training losses (the baseline's with ``baseline``), validation top-1
    (when there is validation), learning rate, time."""
    losses = f"ce {record['train_ce']:.4f}, regularizer {record['adarand/loss']:.4g}"
    losses += f", baseline {record['train_baseline']:.4g}" if baseline else ""
    parts = [f"train loss {record['train_loss']:.4f} ({losses})"]
    if record.get("val_top1") is not None:
        parts.append(f"val top-1 {100 * record['val_top1']:.2f} %")
    parts += [f"lr {record['lr']:.4g}", f"{record['epoch_time_s']:.1f} s"]
    return f"epoch {record['epoch']}/{epochs}: " + ", ".join(parts)


class RunLog:
    """Writes on rank 0 only. ``history`` (the records of earlier epochs, from a checkpoint)
    replaces whatever ``metrics.jsonl`` holds, so a resumed run has no duplicate epochs."""

    def __init__(self, output_dir: str, history: Iterable[dict[str, Any]] = (), enabled: bool = True):
        self.path = os.path.join(output_dir, "metrics.jsonl")
        self.history = list(history)
        self.enabled = enabled
        self.writer = None
        if not enabled:
            return
        write_text(self.path, "".join(json.dumps(r) + "\n" for r in self.history))
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is optional: metrics.jsonl holds the same numbers
            return
        self.writer = SummaryWriter(os.path.join(output_dir, "tensorboard"), purge_step=len(self.history) + 1)

    def log(self, record: dict) -> None:
        self.history.append(record)
        if not self.enabled:
            return
        append_line(self.path, json.dumps(record))
        if self.writer is not None:
            for key, value in record.items():
                if key != "epoch" and isinstance(value, (int, float)):
                    self.writer.add_scalar(key if "/" in key else key.replace("_", "/", 1), value, record["epoch"])
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def read_jsonl(path: str) -> list:
    """The JSON objects of a JSON-lines file (blank lines skipped); errors name the file."""
    with open(path) as f:
        try:
            return [json.loads(line) for line in f if line.strip()]
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not JSON lines ({err})") from None


def read_metrics(run_dir: str) -> list:
    """The per-epoch records of a run directory (``metrics.jsonl``), former key names read as today's
    (:data:`FORMER_KEYS`)."""
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{run_dir}: no metrics.jsonl (not a tools/train_cls.py run directory?)")
    return [{FORMER_KEYS.get(key, key): value for key, value in record.items()} for record in read_jsonl(path)]


def read_results(path: str, metric: str | None = None) -> dict:
    """A finished run's ``results.json``: the file itself, or the run directory holding it. A file that
    is not a JSON object is an error naming it; with ``metric``, so is one without a valid value of
    it (:func:`result_metric`)."""
    if os.path.isdir(path):
        path = os.path.join(path, "results.json")
    with open(path) as f:
        try:
            result = json.load(f)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not JSON ({err})") from None
    if not isinstance(result, dict):
        raise ValueError(f"{path}: not a JSON object but {type(result).__name__}")
    if metric is not None:
        result_metric(result, metric, path)
    return result


def result_metric(result: Mapping[str, Any], metric: str, source: object) -> float:
    """``result[metric]``, an accuracy in [0, 1]; a missing, non-numeric, non-finite or out-of-range
    value is an error naming ``source`` (the results.json it was read from)."""
    value = result.get(metric)
    if value is None:
        raise KeyError(f"{source} has no value for {metric!r}")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not 0.0 <= value <= 1.0:
        raise ValueError(f"{source}: {metric} is {value!r}, not an accuracy in [0, 1] (a failed or damaged run?)")
    return float(value)


def find_results(paths: Iterable[str]) -> list:
    """The ``results.json`` files of ``paths``: run directories, or folders searched for them."""
    files = []
    for path in paths:
        direct = os.path.join(path, "results.json")
        if os.path.isfile(direct):
            files.append(direct)
        else:
            files += sorted(glob.glob(os.path.join(path, "**", "results.json"), recursive=True))
    if not files:
        raise FileNotFoundError(f"no results.json under {paths}")
    return files
