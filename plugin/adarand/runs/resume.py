"""A run's config is part of its record: what a ``--resume`` may change, and what it did change.

A run directory holds ``config.yaml`` (the config its latest segment ran with). Resuming with a
config that differs from it in any key outside the trainer's *safe* list is refused, naming
each key and both values, before anything is written; ``--allow-config-change`` lets it
through, and the change is then recorded with the epoch (classification) or iteration
(detection) it took effect, in ``config_history.json``, as comments at the head of
``config.yaml``, and in ``results.json`` (classification).

Safe keys change neither what is trained nor how (loader workers, logging and checkpoint
periods, the output directory); the length of training (``SOLVER.EPOCHS`` / ``SOLVER.MAX_ITER``)
may change to extend a run, and is recorded like any other change.
"""
import argparse
import json
import os
from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from typing import Any

from ..files import write_json
from .output_dir import release_output_dir

HISTORY_NAME = "config_history.json"

# keys that leave the numbers a run produces unchanged
CLS_NEUTRAL_KEYS = ("OUTPUT_DIR", "LOG_PERIOD", "DATALOADER.NUM_WORKERS", "TEST.BATCH_SIZE", "TEST.WEIGHTS")
CLS_SAFE_RESUME_KEYS = CLS_NEUTRAL_KEYS + ("SOLVER.EPOCHS",)
DET_SAFE_RESUME_KEYS = ("OUTPUT_DIR", "DATALOADER.NUM_WORKERS", "SOLVER.CHECKPOINT_PERIOD", "TEST.EVAL_PERIOD",
                        "VIS_PERIOD", "MODEL.ADARAND.SCALE_LOG_PERIOD", "SOLVER.MAX_ITER")
LAZY_SAFE_RESUME_KEYS = ("train.output_dir", "train.max_iter", "train.checkpointer.period", "train.eval_period",
                         "train.log_period", "dataloader.train.num_workers", "dataloader.test.num_workers")
ALLOW_OPTION = "--allow-config-change"


class ConfigChanged(ValueError):
    """A resume, or a finished run, whose config differs from the one asked for."""


def flatten(node: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings (a ``CfgNode``, a loaded YAML) -> ``{"A.B": value}``; tuples become lists."""
    flat = {}
    for key, value in node.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = _plain(value)
    return flat


def _plain(value):
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def cfg_as_recorded(cfg: Any) -> dict[str, Any]:
    """A ``CfgNode`` flattened as its ``config.yaml`` reads back (same types on both sides)."""
    import yaml

    return flatten(yaml.safe_load(cfg.dump()))


def _tagged_as_text(loader, tag, node):
    """A YAML node with a Python tag (LazyConfig's objects) as text: compared, never constructed."""
    import yaml

    if isinstance(node, yaml.MappingNode):
        value = loader.construct_mapping(node, deep=True)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_scalar(node)
    return f"{tag} {value!r}"


def read_recorded_config(output_dir: str) -> dict[str, Any] | None:
    """The flattened ``output_dir/config.yaml`` (safe loading; Python-tagged nodes kept as text);
    ``None`` when there is none."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("tag:yaml.org,2002:python/", _tagged_as_text)
    path = os.path.join(output_dir, "config.yaml")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        try:
            return flatten(yaml.load(f, Loader=Loader) or {})
        except yaml.YAMLError as err:
            raise ValueError(f"{path}: not YAML ({err})") from None


def config_changes(old: Mapping[str, Any], new: Mapping[str, Any], ignore: Container[str] = ()) -> dict[str, list[Any]]:
    """``{key: [old value, new value]}`` for every key whose value differs (``None`` = absent)."""
    return {k: [old.get(k), new.get(k)] for k in sorted(set(old) | set(new))
            if k not in ignore and old.get(k) != new.get(k)}


def describe(changes: Mapping[str, Sequence[Any]]) -> str:
    return "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changes.items())


def check_resume(output_dir: str, new: Mapping[str, Any], safe_keys: Sequence[str],
                 allow: bool) -> dict[str, list[Any]]:
    """Changes of a resume of ``output_dir`` to the flattened config ``new``; refuses (``ConfigChanged``)
    any outside ``safe_keys`` unless ``allow``. Reads only."""
    old = read_recorded_config(output_dir)
    if old is None:
        if allow:
            return {}
        raise ConfigChanged(f"cannot resume {output_dir}: it holds a checkpoint but no config.yaml, so the "
                            f"config it ran with is unknown; pass {ALLOW_OPTION} to resume it anyway")
    changes = config_changes(old, new)
    unsafe = {k: v for k, v in changes.items() if k not in safe_keys}
    if unsafe and not allow:
        raise ConfigChanged(
            f"refusing to resume {output_dir} with a different experiment (config.yaml -> now): {describe(unsafe)}. "
            f"A resume may change only {', '.join(safe_keys)}. Resume with the run's config, start a new "
            f"OUTPUT_DIR, or pass {ALLOW_OPTION} to continue with the change recorded in the run")
    return changes


def add_resume_arguments(parser: argparse.ArgumentParser, safe_keys: Sequence[str],
                         unit: str) -> argparse.ArgumentParser:
    """``--allow-config-change`` on an entry point's argument parser; ``unit``: what a change is recorded with."""
    parser.add_argument(ALLOW_OPTION, action="store_true",
                        help="--resume with a config that differs from the run's config.yaml in keys other than "
                             f"{', '.join(safe_keys)}; the changes are recorded with their {unit}")
    return parser


def checked_resume_changes(output_dir: str, recorded: Callable[[], Mapping[str, Any]], resuming: bool,
                           safe_keys: Sequence[str], allow: bool) -> dict[str, list[Any]] | None:
    """The config changes of a resume of the claimed ``output_dir`` (:func:`check_resume`); ``None`` when not
    ``resuming``, whose history of an earlier attempt is then cleared. ``recorded``: ``() ->`` the new config
    flattened as config.yaml will hold it, called only when resuming. A refusal releases ``output_dir``."""
    if not resuming:
        clear_history(output_dir)
        return None
    try:
        return check_resume(output_dir, recorded(), safe_keys, allow)
    except ValueError:
        release_output_dir(output_dir)
        raise


def read_history(output_dir: str) -> list[dict[str, Any]]:
    """The recorded config changes of a run: ``[{"epoch"|"iter": n, "changes": {key: [old, new]}}]``."""
    path = os.path.join(output_dir, HISTORY_NAME)
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not JSON ({err})") from None


def clear_history(output_dir: str) -> None:
    """A new run in ``output_dir`` starts without the history of an earlier attempt."""
    path = os.path.join(output_dir, HISTORY_NAME)
    if os.path.isfile(path):
        os.remove(path)


def record_changes(output_dir: str, changes: Mapping[str, Any] | None, unit: str,
                   at: int | None) -> list[dict[str, Any]]:
    """Append the changes that take effect at ``unit`` (``"epoch"`` / ``"iter"``) ``at``; return the history."""
    history = read_history(output_dir)
    if changes:
        history.append({unit: at, "changes": changes})
        write_json(os.path.join(output_dir, HISTORY_NAME), history)
    return history


def history_header(history: Iterable[Mapping[str, Any]]) -> str:
    """YAML comments stating every change of the run's config and when it took effect."""
    lines = []
    for entry in history:
        unit = "epoch" if "epoch" in entry else "iter"
        lines.append(f"# changed on resume, from {unit} {entry[unit]}: {describe(entry['changes'])}")
    if lines:
        lines.insert(0, f"# this run's config changed while it ran ({HISTORY_NAME}); below: the latest")
    return "".join(line + "\n" for line in lines)
