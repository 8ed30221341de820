"""Whether a table's run directories hold the grid's runs, checked before anything is launched.

A run directory counts only when its recorded config (``config.yaml``, and no change on resume) is
the grid's, results aside (:func:`recorded_differences`); ``--launch`` refuses others, or moves them
aside with ``--rerun-differing`` (:func:`settle_differing_runs`). :func:`check_runs` loads every
run's config and checks its weights file first.
"""
import os
import sys


def load_run_cfg(run, repo_root="."):
    """The run's config as train_cls.py will load it (file, then its overrides)."""
    from adarand.classification.config import load_cfg

    return load_cfg(os.path.join(repo_root, run.cell.config), list(run.opts))


def recorded_differences(run, repo_root=".", cfg=None):
    """How the run directory's record differs from the run the grid would make: ``{key: [recorded, grid]}``
    from its ``config.yaml`` (keys that leave the results unchanged aside), plus every change made
    on resume (``config_history.json``); ``None`` when the directory holds no config.yaml. ``cfg``: the
    run's :func:`load_run_cfg` when already loaded."""
    from adarand.runs.resume import CLS_NEUTRAL_KEYS, cfg_as_recorded, config_changes, read_history, \
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
    from adarand.runs.resume import describe

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
    from adarand.classification.weights import check_weights_file

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


def settle_differing_runs(status, cfgs, rerun=False):
    """Runs recorded with another config than the grid's (:func:`differing_runs`): listed and refused
    (False), or, with ``rerun``, moved aside so that they run again (True; their ``status`` becomes new)."""
    from adarand.runs.output_dir import move_aside

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
