"""The paper's tables as runs of ``tools/train_cls.py``: cells, commands, launching.

A *table* has the paper's row and column labels and a list of *cells*; a cell is one config
file (plus ``KEY VALUE`` overrides) at one (row, column) position, run once per seed into
``ROOT/<cell id>/seed<k>``. Cell ids name the setting, not the table, so a setting that appears
in several tables (e.g. FT on Cars with the ImageNet ResNet-50) is one set of runs that every
table reads. A position may hold several cells: the table then shows the best of them (the
paper's "RandReg-Best" column of Table 2, the best of the three RandReg priors). A position
with no cell is a method this project does not implement (DR-Tune, Core-tuning, Co-Tuning,
UOT): only the paper's number is shown. Each table lists, in ``reconstructed``, the rows, columns
and cells that are our reconstruction rather than the paper's (``tools/summarize.py --table``
prints them under the table; docs/fidelity.md).

Launching uses submitit: one job per run, its local executor by default, SLURM on request.
A run whose ``results.json`` is a finished run's record (readable, holding a valid ``test_top1``) is
skipped; one with ``last.pth`` resumes. The grid owns its runs: the keys it sets (SEED, OUTPUT_DIR,
what defines a cell: its method and the keys its config file sets, its own keys; DATASET.ROOT with
``--data-dir``, MODEL.WEIGHTS with ``--weights``) cannot be overridden, and a run directory counts
only when its recorded config (``config.yaml``, and no change on resume) is the grid's, results
aside (:func:`recorded_differences`); ``--launch`` refuses others, or moves them aside with
``--rerun-differing``.
"""
import argparse
import os
import re
import shlex
import sys
import time
from dataclasses import dataclass

CONFIG_DIR = "configs/classification"
SEEDS = (0, 1, 2)
METHOD_KEYS = ("MODEL.ADARAND.METHOD", "BASELINE.METHOD")  # the config keys that name a cell's method
FINISHED_METRIC = "test_top1"  # a run is finished when its results.json holds a valid value of it
CONFIG_KEY = re.compile(r"[A-Z][A-Z0-9_]*(\.[A-Z][A-Z0-9_]*)*")  # a KEY of the KEY VALUE overrides

# method key -> the paper's row/column label
METHODS = {
    "ft": "Fine-tuning",
    "fnp": "FNP",
    "l2sp": "L2SP",
    "delta": "DELTA",
    "bss": "BSS",
    "randreg-uniform": "RandReg-U(0,1)",
    "randreg-normal": "RandReg-N(0,1)",
    "randreg-pretrained": "RandReg-N(mu_p,sigma_p)",
    "randreg-cp": "RandReg-CP",
    "adarand-no-mean": "AdaRand w/o L_mean",
    "adarand-no-dist": "AdaRand w/o L_dist",
    "adarand": "AdaRand",
}
RANDREG = ("randreg-uniform", "randreg-normal", "randreg-pretrained")
NOT_IMPLEMENTED = ("DR-Tune", "Core-tuning", "Co-Tuning", "UOT")

# config tag -> (pre-training, architecture), the paper's labels
PRETRAININGS = {
    "r50": ("ImageNet Classification", "RN-50"),
    "vitb32": ("ImageNet Classification", "ViT-B/32"),
    "vitb16": ("ImageNet Classification", "ViT-B/16"),
    "r50simclr": ("ImageNet SimCLR", "RN-50"),
    "r50barlowtwins": ("ImageNet Barlow Twins", "RN-50"),
    "r50clip": ("CLIP", "RN-50"),
    "vitb32clip": ("CLIP", "ViT-B/32"),
    "vitb16clip": ("CLIP", "ViT-B/16"),
    "mobilenetv2": ("ImageNet Classification", "MobileNetV2"),
}

# dataset key (config prefix, DATASET.NAME) -> the paper's column label
DATASETS = {"aircraft": "Aircraft", "cub": "Birds", "cars": "Cars", "dtd": "DTD", "flowers": "Flower", "pets": "Pets"}
CARS_FRACTIONS = {10: "10%", 25: "25%", 50: "50%"}
# The paper's appendix table of alpha lost its values in our text of the paper: this grid is ours
# (alpha = 0: batch means only; 1: running means frozen at their initial value; 0.5: the default).
ALPHAS = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0)


@dataclass(frozen=True)
class Cell:
    """One setting: ``config`` (relative to the repository root) plus ``opts``, at (row, col)."""

    id: str
    config: str
    row: str
    col: str
    opts: tuple = ()
    dataset: str = "cars"
    pretraining: str = "r50"

    @property
    def method(self):
        """The method the cell runs, as its runs' ``results.json`` records it: its config's last ``_`` part."""
        return os.path.basename(self.config)[:-len(".yaml")].rsplit("_", 1)[1]


@dataclass(frozen=True)
class Table:
    name: str
    title: str
    rows: tuple
    cols: tuple
    cells: tuple
    notes: str = ""
    seeds: tuple = SEEDS  # the default of ``--seeds``
    published: bool = True  # a table of the paper (its numbers in paper_results.json), not a study of ours
    reconstructed: tuple = ()  # which rows / columns / cells are ours, not the paper's (one line each)
    # (column, suffix): the column reads results.json's ``<metric><suffix>`` (an extra test set of the same runs)
    metric_suffixes: tuple = ()

    @property
    def empty_position(self):
        """What a position without a cell shows: a method we do not implement, or, in a study, a setting not run."""
        return "not implemented" if self.published else "not run"

    def cells_at(self, row, col):
        return [c for c in self.cells if c.row == row and c.col == col]

    def metric_of(self, col, metric):
        """The results.json key column ``col`` shows for ``metric``."""
        return metric + dict(self.metric_suffixes).get(col, "")


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


# lines of several tables' ``reconstructed``
RANDREG_ORDER = ("RandReg rows: which prior each is was lost with the symbols in our text; inferred from the "
                 "order in which the paper introduces them")
SSL_RECIPE = ("rows ImageNet SimCLR, ImageNet Barlow Twins and CLIP (RN-50): the official code's AdamW recipe, "
              "where Sec. 6.1 names Nesterov SGD for ResNet-50")


def _cfg(name):
    return f"{CONFIG_DIR}/{name}.yaml"


def _cell(dataset, tag, method, row, col, prefix=None, opts=()):
    name = f"{prefix or dataset}_{tag}_{method}"
    return Cell(name, _cfg(name), row, col, tuple(opts), dataset, tag)


def _table1():
    tags = ("r50", "r50simclr", "r50barlowtwins", "r50clip")
    methods = ("ft", "fnp", *RANDREG)
    cells = [_cell("cars", t, m, PRETRAININGS[t][0], METHODS[m]) for t in tags for m in methods]
    return Table("1", "Table 1: Cars, ResNet-50 from four pre-trainings, RandReg's priors (top-1 test acc., %)",
                 tuple(PRETRAININGS[t][0] for t in tags), tuple(METHODS[m] for m in methods), tuple(cells),
                 reconstructed=(SSL_RECIPE,))


def _table2():
    tags = ("r50", "vitb32", "vitb16", "r50simclr", "r50barlowtwins", "r50clip", "vitb32clip", "vitb16clip")
    rows = {t: " / ".join(PRETRAININGS[t]) for t in tags}
    cols = ("Fine-tuning", "FNP", "DR-Tune", "RandReg-Best", "AdaRand")
    cells = []
    for t in tags:
        cells += [_cell("cars", t, "ft", rows[t], "Fine-tuning"), _cell("cars", t, "fnp", rows[t], "FNP")]
        cells += [_cell("cars", t, m, rows[t], "RandReg-Best") for m in RANDREG]
        cells.append(_cell("cars", t, "adarand", rows[t], "AdaRand"))
    return Table("2", "Table 2: Cars, pre-trainings x architectures (top-1 test acc., %)",
                 tuple(rows.values()), cols, tuple(cells),
                 "RandReg-Best: the best of the three RandReg priors by mean test accuracy, as the paper's column "
                 "(its RN-50 values are the row maxima of Table 1).",
                 reconstructed=(SSL_RECIPE.replace("CLIP (RN-50)", "CLIP / RN-50"),
                                "RandReg-Best: picked by our mean test accuracy among the three priors (the published "
                                "column is Table 1's row maxima)"))


TABLE3_METHODS = ("ft", "fnp", *RANDREG, "randreg-cp", "adarand")


def _table3():
    rows = ("Fine-tuning", "FNP", "DR-Tune", *(METHODS[m] for m in TABLE3_METHODS[2:]))
    cells = [_cell(d, "r50", m, METHODS[m], label) for d, label in DATASETS.items() for m in TABLE3_METHODS]
    return Table("3", "Table 3: six datasets, ImageNet ResNet-50 (top-1 test acc., %)",
                 rows, tuple(DATASETS.values()), tuple(cells), reconstructed=(RANDREG_ORDER,))


def _table4():
    cells = [_cell("cars", "r50", m, METHODS[m], label, prefix=f"cars{p}")
             for p, label in CARS_FRACTIONS.items() for m in TABLE3_METHODS]
    return Table("4", "Table 4: Cars reduced to 10/25/50 % of its training set, ImageNet ResNet-50 "
                 "(top-1 test acc., %)",
                 tuple(METHODS[m] for m in TABLE3_METHODS), tuple(CARS_FRACTIONS.values()), tuple(cells),
                 "Table 4 is missing from our text of the paper: its rows (Table 3's methods), the fractions "
                 "10/25/50 % and its published numbers are not taken from the paper.",
                 reconstructed=("every row, column and cell: Table 4 is lost in our text (Sec. 6.4 names 10 %); its "
                                "rows are Table 3's methods and the 25 % and 50 % columns our fractions",))


TABLE5_ROWS = ("ft", "fnp", "l2sp", "delta", "bss", "Core-tuning", "DR-Tune", "Co-Tuning", "UOT", *RANDREG,
               "randreg-cp", "adarand-no-mean", "adarand-no-dist", "adarand")


def _table5():
    col = "Test Accuracy"
    cells = [_cell("cars", "r50", m, METHODS[m], col) for m in TABLE5_ROWS if m in METHODS]
    return Table("5", "Table 5: Cars, ImageNet ResNet-50, baselines and ablations (top-1 test acc., %)",
                 tuple(METHODS.get(m, m) for m in TABLE5_ROWS), (col,), tuple(cells),
                 reconstructed=(RANDREG_ORDER, "AdaRand w/o rows: which loss each lacks is inferred the same way",
                                "L2SP, DELTA, BSS: the paper gives no recipe or hyper-parameters; ours run on the "
                                "AdaRand ResNet-50 recipe, DELTA as DELTA's own code, BSS with TLlib's eta and k"))


def _alpha():
    col = "Cars"
    cells = []
    for a in ALPHAS:
        if a == 0.5:  # the default: the same runs as AdaRand in Tables 3 and 5
            cells.append(_cell("cars", "r50", "adarand", f"alpha={a:g}", col))
        else:
            cells.append(Cell(f"cars_r50_adarand_alpha{a:g}", _cfg("cars_r50_adarand"), f"alpha={a:g}", col,
                              ("MODEL.ADARAND.ALPHA", repr(float(a)))))
    return Table("alpha", "Appendix: AdaRand's EMA decay alpha (Eq. 14) on Cars, ImageNet ResNet-50 "
                 "(top-1 test acc., %)",
                 tuple(f"alpha={a:g}" for a in ALPHAS), (col,), tuple(cells),
                 "The appendix's alpha values and numbers are missing from our text of the paper; the grid is ours.",
                 reconstructed=("every row and cell: the appendix's alpha values and numbers are lost in our text; "
                                "the grid is ours",))


DIGITS_METHODS = ("ft", "fnp", "randreg-cp", "adarand")
DIGITS_FRACTIONS = (10, 20, 50)
DIGITS_EPOCHS, DIGITS_LONG_EPOCHS = 8, 30


def _digits():
    """Our CPU study (not a table of the paper): the demo's set-up at three training fractions, every
    method at its defaults with identical budgets, 20 paired seeds, plus a longer arm at 20 %."""
    def cell(method, fraction, epochs):
        col = f"{fraction}%" + ("" if epochs == DIGITS_EPOCHS else f", {epochs} epochs")
        suffix = "" if epochs == DIGITS_EPOCHS else f"_{epochs}ep"
        return Cell(f"digits{fraction}_mobilenetv2_{method}{suffix}", _cfg(f"digits_mobilenetv2_{method}"),
                    METHODS[method], col, ("DATASET.FRACTION", repr(fraction / 100), "SOLVER.EPOCHS", str(epochs)),
                    "digits", "mobilenetv2")

    cells = [cell(m, p, DIGITS_EPOCHS) for p in DIGITS_FRACTIONS for m in DIGITS_METHODS]
    cells += [cell(m, 20, DIGITS_LONG_EPOCHS) for m in ("randreg-cp", "adarand")]
    cols = (*(f"{p}%" for p in DIGITS_FRACTIONS), f"20%, {DIGITS_LONG_EPOCHS} epochs")
    return Table("digits", "CPU study (ours, not the paper's): scikit-learn digits, ImageNet MobileNetV2, "
                 f"64 px, {DIGITS_EPOCHS} epochs (top-1 test acc., %)",
                 tuple(METHODS[m] for m in DIGITS_METHODS), cols, tuple(cells),
                 "Every cell is ours: the paper has no digits experiment. Configs as shipped "
                 "(configs/classification/digits_mobilenetv2_*.yaml), every method at its defaults.",
                 seeds=tuple(range(20)), published=False,
                 reconstructed=("every cell: our CPU study, not an experiment of the paper",))


CLIP_IMAGENET_METHODS = ("ft", "fnp", *RANDREG, "adarand")
CLIP_IMAGENET_EPOCHS = 5  # App. B.1: "fine-tuning CLIP on ImageNet (5 epoch)"
# column -> the extra test set (DATASET.EXTRA_TESTS, read beside datasets/imagenet) it is measured on
CLIP_IMAGENET_COLS = {"ImageNet": "", "ImageNet-A": "imagenet-a", "ImageNet-R": "imagenet-r"}


def _clip_imagenet():
    """App. B.1: CLIP fine-tuned on ImageNet for 5 epochs, tested on ImageNet, -A and -R (one run a
    method: the -A / -R columns are extra test sets of the same run). The text names neither the CLIP
    architecture nor the rest of the recipe: ours are ViT-B/16 and its Cars recipe."""
    extra = [name for name in CLIP_IMAGENET_COLS.values() if name]

    def cell(method, col):
        name = f"cars_vitb16clip_{method}"
        return Cell(f"imagenet_vitb16clip_{method}", _cfg(name), METHODS[method], col,
                    ("DATASET.NAME", "imagenet", "DATASET.ROOT", "datasets/imagenet", "DATASET.EXTRA_TESTS",
                     repr(extra), "SOLVER.EPOCHS", str(CLIP_IMAGENET_EPOCHS)), "imagenet", "vitb16clip")

    rows = ("Fine-tuning", "FNP", "DR-Tune", *(METHODS[m] for m in CLIP_IMAGENET_METHODS[2:]))
    return Table("clip-imagenet", f"Appendix B.1: CLIP (ViT-B/16, ours) fine-tuned on ImageNet for "
                 f"{CLIP_IMAGENET_EPOCHS} epochs (top-1 test acc., %)", rows, tuple(CLIP_IMAGENET_COLS),
                 tuple(cell(m, col) for m in CLIP_IMAGENET_METHODS for col in CLIP_IMAGENET_COLS),
                 metric_suffixes=tuple((col, f"@{name}") for col, name in CLIP_IMAGENET_COLS.items() if name),
                 reconstructed=("the backbone (CLIP ViT-B/16) and the recipe beyond 5 epochs (the Cars ViT-B recipe, "
                                "validation held out of ImageNet's training set): App. B.1 names only CLIP and 5 "
                                "epochs", RANDREG_ORDER))


# Fig. IV (App. A) varies lambda; its values are lost in our text of the paper: this grid is ours.
LAMBDAS = (0.1, 0.3, 1.0, 3.0, 10.0)
LAMBDA_METHODS = (*RANDREG, "adarand")


def _lambda():
    """Fig. IV as a table: the trade-off lambda (Eq. 1) for AdaRand and the RandReg priors on Cars with
    the ImageNet ResNet-50 (our setting: the text names neither dataset nor backbone)."""
    cells = []
    for method in LAMBDA_METHODS:
        for lam in LAMBDAS:
            col = f"lambda={lam:g}"
            if lam == 1.0:  # the default: the same runs as Tables 3 and 5
                cells.append(_cell("cars", "r50", method, METHODS[method], col))
            else:
                cells.append(Cell(f"cars_r50_{method}_lambda{lam:g}", _cfg(f"cars_r50_{method}"), METHODS[method],
                                  col, ("MODEL.ADARAND.LAMBDA", repr(float(lam)))))
    return Table("lambda", "Appendix A, Fig. IV: the trade-off lambda (Eq. 1) on Cars, ImageNet ResNet-50 "
                 "(top-1 test acc., %)", tuple(METHODS[m] for m in LAMBDA_METHODS),
                 tuple(f"lambda={lam:g}" for lam in LAMBDAS), tuple(cells),
                 reconstructed=("every row, column and cell: Fig. IV is a figure whose lambda values are lost in our "
                                "text; the grid, the rows (the RandReg priors and AdaRand the text compares) and the "
                                "setting (Cars, ImageNet ResNet-50) are ours; no published number is transcribed",))


TABLES = {t.name: t for t in (_table1(), _table2(), _table3(), _table4(), _table5(), _alpha(), _digits(),
                              _clip_imagenet(), _lambda())}


def get_table(name):
    if str(name) not in TABLES:
        raise KeyError(f"unknown table {name!r}; expected one of {list(TABLES)}")
    return TABLES[str(name)]


def select_cells(table, cell_ids=()):
    """The table's cells, deduplicated, optionally only ``cell_ids`` (an unknown id is an error)."""
    cells = list({c.id: c for c in table.cells}.values())
    if cell_ids:
        unknown = sorted(set(cell_ids) - {c.id for c in cells})
        if unknown:
            raise KeyError(f"cells {unknown} are not in table {table.name}; its cells: {[c.id for c in cells]}")
        cells = [c for c in cells if c.id in cell_ids]
    return cells


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

    from adarand.run_config import flatten

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


def load_run_cfg(run, repo_root="."):
    """The run's config as train_cls.py will load it (file, then its overrides)."""
    from adarand.classification.config import load_cfg

    return load_cfg(os.path.join(repo_root, run.cell.config), list(run.opts))


def recorded_differences(run, repo_root=".", cfg=None):
    """How the run directory's record differs from the run the grid would make: ``{key: [recorded, grid]}``
    from its ``config.yaml`` (keys that leave the results unchanged aside), plus every change made
    on resume (``config_history.json``); ``None`` when the directory holds no config.yaml. ``cfg``: the
    run's :func:`load_run_cfg` when already loaded."""
    from adarand.run_config import CLS_NEUTRAL_KEYS, cfg_as_recorded, config_changes, read_history, \
        read_recorded_config

    recorded = read_recorded_config(run.output_dir)
    if recorded is None:
        return None
    cfg = cfg if cfg is not None else load_run_cfg(run, repo_root)
    differences = config_changes(recorded, cfg_as_recorded(cfg), ignore=CLS_NEUTRAL_KEYS)
    for entry in read_history(run.output_dir):
        for key, (old, new) in entry["changes"].items():
            if key not in CLS_NEUTRAL_KEYS:
                differences.setdefault(f"{key} (changed on resume at epoch {entry['epoch']})", [old, new])
    return differences


def differing_runs(status, cfgs):
    """{run: description} of the runs holding results or a checkpoint made with another config
    (``status``: {run: run.status()}; ``cfgs``: {run: config}, :func:`check_runs`)."""
    from adarand.run_config import describe

    found = {}
    for run, state in status.items():
        if state == "new":
            continue
        differences = recorded_differences(run, cfg=cfgs[run])
        if differences is None:
            found[run] = "no config.yaml: what it ran is unknown"
        elif differences:
            found[run] = f"recorded -> grid: {describe(differences)}"
    return found


def check_runs(runs, repo_root="."):
    """Load every run's config and check that its weights file exists (relative paths from ``repo_root``,
    where the jobs run), before anything is launched; returns {run: config}."""
    from adarand.classification.backbones import check_weights_file

    cfgs = {}
    for run in runs:
        cfg = cfgs[run] = load_run_cfg(run, repo_root)
        try:
            check_weights_file(cfg.MODEL.WEIGHTS, cfg.MODEL.BACKBONE, cfg.MODEL.CHECKPOINT_FORMAT, cwd=repo_root)
        except FileNotFoundError as err:
            raise FileNotFoundError(f"cell {run.cell.id} ({run.cell.config}): {err}; or pass "
                                    f"--weights {run.cell.pretraining}=FILE") from None
    return cfgs


def check_all(runs, repo_root="."):
    """Every problem :func:`check_runs` would stop at, one line per cell (its seeds share them): a config
    that does not load, a weights file that is not there. Nothing is started."""
    problems = {}
    for run in runs:
        if run.cell.id not in problems:
            problems[run.cell.id] = None
            try:
                check_runs([run], repo_root)
            except FileNotFoundError as err:  # names the cell already
                problems[run.cell.id] = str(err)
            except (KeyError, ValueError) as err:  # a key or value of the config (KeyError's str() quotes)
                problems[run.cell.id] = f"cell {run.cell.id} ({run.cell.config}): {err.args[0]}"
    return [p for p in problems.values() if p]


def command_line(run, **kwargs):
    return shlex.join(run.argv(python="python", **kwargs))


def make_executor(folder, cluster="local", partition="", gpus=1, cpus=10, timeout_min=4320, name="adarand"):
    """A submitit executor: ``local`` (processes on this machine) or ``slurm`` (one job per run)."""
    import submitit

    if cluster not in ("local", "slurm"):
        raise ValueError(f"cluster {cluster!r}; expected local or slurm")
    executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
    params = {"timeout_min": timeout_min, "name": name, "nodes": 1, "tasks_per_node": 1}
    if cluster == "slurm":
        params.update(gpus_per_node=gpus, cpus_per_task=cpus)
        if partition:
            params["slurm_partition"] = partition
    executor.update_parameters(**params)
    return executor


def launch(runs, executor, repo_root=".", nproc_per_node=1, max_parallel=1, poll_s=1.0, progress=True):
    """Run every unfinished run as one job (``--resume`` where last.pth exists), at most ``max_parallel``
    at a time (0 = all at once, e.g. SLURM queues them); returns {run: error} of the failed ones."""
    from submitit.helpers import CommandFunction
    from tqdm import tqdm

    pending = [r for r in runs if r.status() != "done"]
    failed, active = {}, []
    env = dict(os.environ)
    with tqdm(total=len(runs), initial=len(runs) - len(pending), desc="runs", unit="run", disable=not progress) as bar:
        while pending or active:
            while pending and (max_parallel <= 0 or len(active) < max_parallel):
                run = pending.pop(0)
                argv = run.argv(python=sys.executable, nproc_per_node=nproc_per_node, quiet=True)
                job = executor.submit(CommandFunction(argv, verbose=False, cwd=os.path.abspath(repo_root), env=env))
                active.append((run, job))
            time.sleep(poll_s)
            for run, job in [a for a in active if a[1].done()]:
                active.remove((run, job))
                error = job.exception()
                if error is not None:
                    failed[run] = f"{error} (job log: {job.paths.stderr})"
                bar.update(1)
                bar.set_postfix(failed=len(failed))
    return failed


def settle_differing_runs(status, cfgs, rerun=False):
    """Runs recorded with another config than the grid's (:func:`differing_runs`): listed and refused
    (False), or, with ``rerun``, moved aside so that they run again (True; their ``status`` becomes new)."""
    from adarand.files import move_aside

    differing = differing_runs(status, cfgs)
    for run, why in differing.items():
        if rerun:
            print(f"moved {run.output_dir} to {move_aside(run.output_dir)} ({why}); it runs again", file=sys.stderr)
            status[run] = "new"
        else:
            print(f"DIFFERS {run.output_dir}: {why}", file=sys.stderr)
    if differing and not rerun:
        print(f"refusing to launch: {len(differing)} run directories hold a run of another config than the "
              "grid's; move them, or pass --rerun-differing to move them aside and rerun them", file=sys.stderr)
        return False
    return True


def get_args_parser(description=None):
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--table", required=True, choices=list(TABLES),
                        help="a table of the paper (1-5, alpha, lambda, clip-imagenet) or our digits study")
    parser.add_argument("--seeds", nargs="+", default=None,
                        help=f"training seeds (default: the table's; {list(SEEDS)} for the paper's tables)")
    parser.add_argument("--root", default="output/reproduce", help="runs go to ROOT/<cell id>/seed<k>")
    parser.add_argument("--cells", nargs="+", default=[], metavar="ID", help="only these cells of the table")
    parser.add_argument("--data-dir", default="",
                        help="DATASET.ROOT becomes DATA_DIR/<dataset> (default: the configs')")
    parser.add_argument("--weights", nargs="+", default=[], metavar="TAG=FILE",
                        help=f"pre-trained weights files, TAG one of {list(PRETRAININGS)}")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    parser.add_argument("--check", action="store_true",
                        help="with --dry-run: also load every run's config and check that every weights file named "
                             "exists (exit 1 listing the problems); nothing is started")
    mode.add_argument("--launch", action="store_true", help="run the unfinished runs through submitit")
    parser.add_argument("--cluster", default="local", choices=("local", "slurm"), help="submitit executor")
    parser.add_argument("--partition", default="", help="SLURM partition")
    parser.add_argument("--gpus", type=int, default=1, help="GPUs per job (SLURM), torchrun processes when > 1")
    parser.add_argument("--cpus", type=int, default=10, help="CPUs per job (SLURM)")
    parser.add_argument("--time", type=int, default=4320, help="job time limit in minutes")
    parser.add_argument("--max-parallel", type=int, default=None,
                        help="jobs at once (default: 1 locally, all on SLURM; 0 = all)")
    parser.add_argument("--job-dir", default="", help="submitit's logs (default ROOT/_jobs)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--rerun-differing", action="store_true",
                        help="--launch: move run directories made with another config to <dir>.old<k> and rerun "
                             "them (default: refuse)")
    parser.add_argument("opts", nargs=argparse.REMAINDER,
                        help="KEY VALUE overrides added to every run (not the keys the grid sets itself); after "
                             "--cells / --seeds too (the first upper-case KEY ends their list), or after --")
    return parser


def parse_args(parser, argv=None):
    """``parser.parse_args`` with the ``KEY VALUE`` overrides that ``--cells`` / ``--seeds`` (lists) took
    given back to ``opts`` (from the first item that is a config key, upper case as ``MODEL.X``), a
    ``--`` before the overrides dropped, and the seeds as integers."""
    args = parser.parse_args(argv)
    opts = args.opts[1:] if args.opts[:1] == ["--"] else args.opts
    for name in ("cells", "seeds"):
        values = getattr(args, name) or []
        at = next((i for i, v in enumerate(values) if CONFIG_KEY.fullmatch(v)), len(values))
        if at == 0 and values:
            parser.error(f"--{name} {' '.join(values)}: give the {name} before the KEY VALUE overrides")
        if at < len(values):
            setattr(args, name, values[:at])
            opts = values[at:] + opts
    args.opts = opts
    if args.seeds is not None:
        try:
            args.seeds = [int(seed) for seed in args.seeds]
        except ValueError:
            parser.error(f"--seeds {' '.join(args.seeds)}: seeds are integers; KEY VALUE overrides start with an "
                         "upper-case config key (e.g. SOLVER.EPOCHS 1), or put them after --")
    return args


def _dry_run_check(runs, repo_root):
    """``--dry-run --check``: print every problem of :func:`check_all`; the exit code (1 if any)."""
    problems = check_all(runs, repo_root)
    for problem in problems:
        print(f"CHECK FAILED {problem}", file=sys.stderr)
    cells = len({r.cell.id for r in runs})
    print(f"checked {cells} cells: {len(problems)} with problems", file=sys.stderr)
    return 1 if problems else 0


def main(argv=None, repo_root=".", description=None):
    """``tools/reproduce.py``: print the commands (--dry-run) or launch the unfinished runs; returns the exit code.

    ``repo_root``: the checkout whose configs and tools/train_cls.py the runs use.
    """
    args = parse_args(get_args_parser(description), argv)
    table = get_table(args.table)
    root = os.path.abspath(args.root)
    seeds = args.seeds if args.seeds is not None else list(table.seeds)
    runs = build_runs(table, root, seeds, args.cells, args.data_dir, parse_weights(args.weights), args.opts,
                      repo_root)
    status = {run: run.status() for run in runs}
    for run in runs:
        why = run.record_error()
        if why:
            print(f"UNFINISHED {run.output_dir}: {why}; "
                  + ("resumed from last.pth" if status[run] == "resume" else "it runs again"), file=sys.stderr)
    if args.launch and not settle_differing_runs(status, check_runs(runs, repo_root), args.rerun_differing):
        return 1
    states = list(status.values())
    cells = len(runs) // len(seeds)
    counts = (f"table {table.name}: {len(runs)} runs ({cells} cells x {len(seeds)} seeds): "
               f"{states.count('done')} finished, {states.count('resume')} to resume, {states.count('new')} new")
    if args.dry_run:
        for run in runs:
            print(command_line(run, nproc_per_node=args.gpus))
        print(counts, file=sys.stderr)
        return _dry_run_check(runs, repo_root) if args.check else 0
    print(counts, file=sys.stderr)
    executor = make_executor(args.job_dir or os.path.join(root, "_jobs"), args.cluster, args.partition,
                                       args.gpus, args.cpus, args.time, name=f"adarand-table{table.name}")
    max_parallel = args.max_parallel if args.max_parallel is not None else (1 if args.cluster == "local" else 0)
    failed = launch(runs, executor, repo_root, nproc_per_node=args.gpus, max_parallel=max_parallel,
                              progress=not args.no_progress)
    for run, error in failed.items():
        print(f"FAILED {run.output_dir}: {error}", file=sys.stderr)
    return 1 if failed else 0

