"""Entry points of ``tools/train_cls.py``: argument parser, :func:`train`, :func:`eval_only`, :func:`main`,
and :func:`console_main`, which turns a user error into one ``error:`` line and exit status 2.

Under ``torchrun`` each process joins the group through env:// (NCCL on CUDA, gloo on CPU);
SOLVER.BATCH_SIZE is the total over all processes.

User errors (:func:`is_user_error`) are the project's refusals (``OutputDirInUse``,
``ConfigChanged``, ``UnsafeFileError``, ``NonFinitePriorError``), any ``OSError`` (a missing
config, data set, weights file; an unreadable image, a full disk), and a ``ValueError`` or
``KeyError`` raised while the config, the data, the weights and the checkpoint are read
(:func:`reading_input`: everything before the first training step). Any other exception is a
bug or a failure of the run (divergence) and keeps its traceback.
"""
import argparse
import contextlib
import json
import logging
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch.distributed as dist
from fvcore.common.config import CfgNode

from adarand.distributed import init_from_env, is_distributed, rank
from adarand.files import UnsafeFileError, write_json, write_text
from adarand.runs.output_dir import OutputDirInUse, claim_output_dir, release_output_dir
from adarand.prior import NonFinitePriorError
from adarand.runs.resume import CLS_SAFE_RESUME_KEYS, ConfigChanged, add_resume_arguments, cfg_as_recorded, \
    checked_resume_changes, history_header, record_changes

from .weights import load_strictly
from .checkpoint import load_checkpoint
from .config import load_cfg
from .hooks import HookBase
from .run_log import LOG_FORMAT, log_file
from .trainer import ClassificationTrainer

CHECKPOINTS = ("last.pth", "best.pth")  # a directory holding one of them holds a run
USER_ERRORS = (OutputDirInUse, ConfigChanged, UnsafeFileError, NonFinitePriorError, OSError)
logger = logging.getLogger(__name__)


@contextlib.contextmanager
def reading_input() -> Iterator[None]:
    """Marks a ``ValueError`` / ``KeyError`` raised inside as the user's (the input checks' types), for
    :func:`is_user_error`; the exception itself passes unchanged."""
    try:
        yield
    except (ValueError, KeyError) as err:
        err.adarand_user_input = True  # type: ignore[union-attr]  # a marker read by is_user_error
        raise


def is_user_error(err: BaseException) -> bool:
    """Whether ``err`` is bad input the user can fix (see the module's docstring), not a bug."""
    return isinstance(err, USER_ERRORS) or getattr(err, "adarand_user_input", False)


def check_option_order(opts: Sequence[str]) -> None:
    """An option after the KEY VALUE overrides lands among them (argparse's REMAINDER): name it."""
    misplaced = [token for token in opts if token.startswith("--")]
    if misplaced:
        raise ValueError(f"{' '.join(misplaced)} after the KEY VALUE overrides is read as one of them: "
                         "put options before the KEY VALUE overrides")


def get_args_parser(description: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", default="", metavar="FILE", help="YAML config (may name a _BASE_)")
    parser.add_argument("--resume", action="store_true", help="continue from OUTPUT_DIR/last.pth when it exists")
    parser.add_argument("--eval-only", action="store_true",
                        help="evaluate TEST.WEIGHTS (default OUTPUT_DIR/best.pth) on the test split")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--debug", action="store_true", help="show the traceback of a user error too")
    add_resume_arguments(parser, CLS_SAFE_RESUME_KEYS, "epoch")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides, e.g. SOLVER.EPOCHS 10")
    return parser


def train(cfg: CfgNode, resume: bool = False, progress: bool = True, extra_hooks: Iterable[HookBase] = (),
          allow_config_change: bool = False) -> dict[str, Any]:
    """Claim OUTPUT_DIR (one run per directory; refused when it holds another run's checkpoint
    unless ``resume``; a resume refused when the config differs from the run's, see
    :mod:`adarand.runs.resume`), write config.yaml, then ``ClassificationTrainer`` -> ``resume_or_load``
    -> ``train``; ``extra_hooks`` run after the default ones. Returns the results dict."""
    init_from_env()
    out = cfg.OUTPUT_DIR
    resuming = resume and os.path.isfile(os.path.join(out, "last.pth"))
    changes = None
    if rank() == 0:
        claim_output_dir(out, resume, CHECKPOINTS)  # held until the process exits
        with reading_input():
            changes = checked_resume_changes(out, lambda: cfg_as_recorded(cfg), resuming, CLS_SAFE_RESUME_KEYS,
                                             allow_config_change)
        if not resuming:  # a new run (an earlier attempt that never saved a checkpoint leaves no history)
            write_text(os.path.join(out, "config.yaml"), cfg.dump())
    with log_file(out) if rank() == 0 else contextlib.nullcontext():
        with reading_input():
            trainer = ClassificationTrainer(cfg, progress=progress)
            trainer.register_hooks(extra_hooks)
            trainer.resume_or_load(resume=resume)
        if rank() == 0 and resuming:  # the changes take effect at the first epoch trained from here
            trainer.config_changes = record_changes(out, changes, "epoch", trainer.start_epoch + 1)
            write_text(os.path.join(out, "config.yaml"), history_header(trainer.config_changes) + cfg.dump())
        results = trainer.train()
        if rank() == 0:
            logger.info("test top-1 %.2f %% (mean per class %.2f %%) of the model of epoch %d; %s",
                        100 * results["test_top1"], 100 * results["test_mean_class_acc"], results["best_epoch"],
                        os.path.join(out, "results.json"))
    if rank() == 0:
        release_output_dir(out)  # a failed run keeps it until its process ends
    return results


def eval_only(cfg: CfgNode) -> dict[str, Any]:
    """Evaluate a checkpoint of this trainer (TEST.WEIGHTS, default OUTPUT_DIR/best.pth) on the test split."""
    device = init_from_env()
    with reading_input():
        model, data = ClassificationTrainer.build_model_and_data(cfg, device)
        path = cfg.TEST.WEIGHTS or os.path.join(cfg.OUTPUT_DIR, "best.pth")
        load_strictly(model, load_checkpoint(path, map_location=device)["model"], path, cfg.MODEL.BACKBONE,
                      key="TEST.WEIGHTS", what=f"{cfg.MODEL.BACKBONE} model of {cfg.DATASET.NAME} "
                      f"({data.num_classes} classes)", hint="is it a checkpoint of this trainer for this DATASET "
                      "and MODEL.BACKBONE?")
    test = ClassificationTrainer.test(cfg, model, ClassificationTrainer.build_test_loader(cfg, data.test),
                                      data.num_classes, data.test_class_indices)
    results = {"weights": path, "dataset": cfg.DATASET.NAME, "test_top1": test.top1,
               "test_mean_class_acc": test.mean_class_acc}
    if rank() == 0:
        os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
        write_json(os.path.join(cfg.OUTPUT_DIR, "eval_results.json"), results)
    return results


def main(argv: Sequence[str] | None = None, description: str | None = None) -> dict[str, Any]:
    """Parse ``argv``, train (or evaluate with --eval-only) and print the results as one JSON line;
    errors propagate (:func:`console_main` is the console's entry point)."""
    return run(get_args_parser(description).parse_args(argv))


def run(args: argparse.Namespace) -> dict[str, Any]:
    """:func:`main` after parsing; log records go to stderr in :data:`LOG_FORMAT`."""
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    with reading_input():
        check_option_order(args.opts)
        cfg = load_cfg(args.config_file, args.opts)
    try:
        results = eval_only(cfg) if args.eval_only else train(
            cfg, resume=args.resume, progress=not args.no_progress, allow_config_change=args.allow_config_change)
        if rank() == 0:
            print(json.dumps(results))
    finally:
        if is_distributed():
            dist.destroy_process_group()
    return results


def console_main(argv: Sequence[str] | None = None, description: str | None = None) -> dict[str, Any]:
    """:func:`main` for the console: a user error (:func:`is_user_error`) prints one ``error: ...`` line
    on stderr and exits with status 2 (``--debug``: its traceback instead); other errors keep theirs.
    Python warnings go to the log (and log.txt)."""
    args = get_args_parser(description).parse_args(argv)
    logging.captureWarnings(True)
    try:
        return run(args)
    except Exception as err:
        if args.debug or not is_user_error(err):
            raise
        message = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
        print("error: " + " ".join(str(message).split("\n")), file=sys.stderr)
        sys.exit(2)
