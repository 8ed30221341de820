"""A table's runs: one per cell and seed, their directories, commands and the overrides they accept.

The grid owns its runs: the keys it sets (SEED, OUTPUT_DIR, what defines a cell: its method and the
keys its config file sets, its own keys; DATASET.ROOT with ``--data-dir``, MODEL.WEIGHTS with
``--weights``) cannot be overridden (:func:`check_overrides`). A run whose ``results.json`` is a
finished run's record (readable, holding a valid ``test_top1``) is done; one with ``last.pth``
resumes (:meth:`Run.status`).
"""
import os
import shlex
import sys
from dataclasses import dataclass

from .grid import METHOD_KEYS, PRETRAININGS, Cell, select_cells

FINISHED_METRIC = "test_top1"  # a run is finished when its results.json holds a valid value of it


@dataclass(frozen=True)
class Run:
    cell: Cell
    seed: int
    output_dir: str
    opts: tuple = ()  # cell opts + SEED + OUTPUT_DIR + user overrides

    def record_error(self):
        """Why the run's ``results.json`` is no finished run's record (unreadable, not a JSON object, no valid
        ``test_top1``); None when it is one, or when there is none."""
        from adarand.classification.run_log import read_results

        path = os.path.join(self.output_dir, "results.json")
        if not os.path.isfile(path):
            return None
        try:
            read_results(path, FINISHED_METRIC)
        except (OSError, KeyError, ValueError) as err:
            return err.args[0] if isinstance(err, KeyError) else str(err)
        return None

    def status(self):
        """``done`` (results.json, a finished run's record: :meth:`record_error`), ``resume`` (last.pth) or ``new``."""
        if os.path.isfile(os.path.join(self.output_dir, "results.json")) and self.record_error() is None:
            return "done"
        if os.path.isfile(os.path.join(self.output_dir, "last.pth")):
            return "resume"
        return "new"

    def argv(self, python=sys.executable, nproc_per_node=1, quiet=False):
        """``python tools/train_cls.py --config-file FILE [--resume] KEY VALUE ...`` (torchrun for > 1 process)."""
        launcher = [python] if nproc_per_node <= 1 else ["torchrun", f"--nproc_per_node={nproc_per_node}"]
        flags = (["--resume"] if self.status() == "resume" else []) + (["--no-progress"] if quiet else [])
        return launcher + ["tools/train_cls.py", "--config-file", self.cell.config, *flags, *self.opts]


def parse_weights(items):
    """``["r50simclr=FILE", ...]`` -> {tag: FILE}; an unknown tag is an error listing the tags."""
    weights = {}
    for item in items:
        tag, sep, path = item.partition("=")
        if not sep or tag not in PRETRAININGS or not path:
            raise ValueError(f"--weights {item!r}: expected TAG=FILE with TAG one of {list(PRETRAININGS)}")
        weights[tag] = os.path.abspath(path)  # jobs run in the repository root
    return weights


def build_runs(table, root, seeds=None, cell_ids=(), data_dir="", weights=None, opts=(), repo_root="."):
    """One ``Run`` per cell and seed (default: the table's seeds), into ``root/<cell id>/seed<k>``.

    ``data_dir``: DATASET.ROOT becomes ``data_dir/<dataset>``; ``weights``: {pre-training tag: file}
    sets MODEL.WEIGHTS of that pre-training's cells; ``opts``: KEY VALUE pairs added to every run
    (:func:`check_overrides`; the cells' config files are read from ``repo_root``)."""
    if len(opts) % 2:
        raise ValueError(f"overrides must be KEY VALUE pairs, got {list(opts)}")
    weights = weights or {}
    cells = select_cells(table, cell_ids)
    check_overrides(cells, opts, data_dir, weights, repo_root)
    seeds = table.seeds if seeds is None else seeds
    runs = []
    for cell in cells:
        extra = list(cell.opts)
        if data_dir:  # absolute: jobs run in the repository root
            extra += ["DATASET.ROOT", os.path.join(os.path.abspath(data_dir), cell.dataset)]
        if cell.pretraining in weights:
            extra += ["MODEL.WEIGHTS", weights[cell.pretraining]]
        for seed in seeds:
            out = os.path.join(root, cell.id, f"seed{seed}")
            runs.append(Run(cell, seed, out, tuple(extra + ["SEED", str(seed), "OUTPUT_DIR", out, *opts])))
    return runs


def config_file_keys(config, repo_root="."):
    """The keys the cell config ``config`` sets, itself and through the cell configs it names as ``_BASE_``,
    up to the shared recipe (``Base-*.yaml``, whose keys, e.g. SOLVER.EPOCHS, may be overridden)."""
    import yaml

    from adarand.runs.resume import flatten

    keys, path = set(), os.path.join(repo_root, config)
    while path and not os.path.basename(path).startswith("Base-"):
        with open(path) as f:
            node = yaml.safe_load(f) or {}
        keys.update(flatten(node))
        path = node.get("_BASE_") and os.path.join(os.path.dirname(path), node["_BASE_"])
    return keys - {"_BASE_"}


def check_overrides(cells, opts, data_dir="", weights=None, repo_root="."):
    """Refuse a ``KEY VALUE`` override of a key the grid sets itself: SEED and OUTPUT_DIR (each run's),
    what defines a cell (its method, :data:`METHOD_KEYS`, the keys its config file sets,
    :func:`config_file_keys`, and its own keys), DATASET.ROOT with ``data_dir``, MODEL.WEIGHTS of a
    pre-training in ``weights``."""
    owned = {"SEED": "each run's seed; choose them with --seeds", "OUTPUT_DIR": "each run's directory; choose the "
             "root with --root"}
    if data_dir:
        owned["DATASET.ROOT"] = "set from --data-dir"
    for cell in cells:
        for key in cell.opts[::2]:
            owned.setdefault(key, f"set by cell {cell.id}")
        if cell.pretraining in (weights or {}):
            owned.setdefault("MODEL.WEIGHTS", f"set from --weights {cell.pretraining}=FILE")
        if opts:
            for key in METHOD_KEYS:
                owned.setdefault(key, f"the method of cell {cell.id}, {cell.method}; choose methods with --cells")
            for key in sorted(config_file_keys(cell.config, repo_root)):
                owned.setdefault(key, f"set by cell {cell.id}'s {cell.config}"
                                 + ("; point the cells at the data with --data-dir" if key == "DATASET.ROOT" else ""))
    for key, value in zip(opts[::2], opts[1::2]):
        if key in owned:
            raise ValueError(f"override {key} {value}: the grid sets {key} itself "
                             f"({owned[key]}); an override would make its runs differ from what they are named")


def command_line(run, **kwargs):
    return shlex.join(run.argv(python="python", **kwargs))
