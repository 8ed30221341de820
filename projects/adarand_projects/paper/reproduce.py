"""``tools/reproduce.py``: print a table's commands (``--dry-run``, ``--check``) or launch its unfinished runs.

The table and its cells are in ``grid.py``, the runs and the overrides they accept in ``plan.py``,
whether a run directory holds the grid's run in ``status.py``, the submitit launcher in ``launcher.py``.
"""
import argparse
import os
import re
import sys

from .grid import PRETRAININGS, SEEDS, TABLES, get_table
from .launcher import launch, make_executor
from .plan import build_runs, command_line, parse_weights
from .status import check_all, check_runs, settle_differing_runs

CONFIG_KEY = re.compile(r"[A-Z][A-Z0-9_]*(\.[A-Z][A-Z0-9_]*)*")  # a KEY of the KEY VALUE overrides


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
