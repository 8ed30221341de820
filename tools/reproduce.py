#!/usr/bin/env python
"""Every table of the paper as runs of tools/train_cls.py (3 seeds a cell).

    python tools/reproduce.py --table 3 --dry-run                  # one command a line
    python tools/reproduce.py --table 3 --launch --data-dir /data  # submitit, local executor
    python tools/reproduce.py --table 2 --launch --cluster slurm --partition gpu --gpus 1 \\
        --weights r50simclr=/w/simclr.pth r50barlowtwins=/w/bt.pth r50clip=/w/clip_rn50.pth \\
        vitb32clip=/w/clip_vitb32.pth vitb16clip=/w/clip_vitb16.pth
    python tools/summarize.py --table 3                            # ours beside the paper's

Tables: 1-5 and alpha (the appendix's alpha sweep). Runs go to ROOT/<cell id>/seed<k>; a cell
shared by several tables (e.g. FT on Cars) is one set of runs. --launch skips finished runs
(results.json) and resumes interrupted ones (last.pth, --resume). Trailing KEY VALUE pairs are
added to every command (e.g. SOLVER.EPOCHS 1 for a smoke test).
"""
import argparse
import os
import sys

from adarand.classification import reproduce

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def get_args_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--table", required=True, choices=list(reproduce.TABLES), help="the paper's table")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(reproduce.SEEDS), help="training seeds")
    parser.add_argument("--root", default="output/reproduce", help="runs go to ROOT/<cell id>/seed<k>")
    parser.add_argument("--cells", nargs="+", default=[], metavar="ID", help="only these cells of the table")
    parser.add_argument("--data-dir", default="",
                        help="DATASET.ROOT becomes DATA_DIR/<dataset> (default: the configs')")
    parser.add_argument("--weights", nargs="+", default=[], metavar="TAG=FILE",
                        help=f"pre-trained weights files, TAG one of {list(reproduce.PRETRAININGS)}")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
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
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides added to every run")
    return parser


def main(argv=None):
    args = get_args_parser().parse_args(argv)
    table = reproduce.get_table(args.table)
    root = os.path.abspath(args.root)
    runs = reproduce.build_runs(table, root, args.seeds, args.cells, args.data_dir,
                                reproduce.parse_weights(args.weights), args.opts)
    status = [r.status() for r in runs]
    cells = len(runs) // len(args.seeds)
    summary = (f"table {table.name}: {len(runs)} runs ({cells} cells x {len(args.seeds)} seeds): "
               f"{status.count('done')} finished, {status.count('resume')} to resume, {status.count('new')} new")
    if args.dry_run:
        for run in runs:
            print(reproduce.command_line(run, nproc_per_node=args.gpus))
        print(summary, file=sys.stderr)
        return 0
    reproduce.check_runs(runs, REPO_ROOT)
    print(summary, file=sys.stderr)
    executor = reproduce.make_executor(args.job_dir or os.path.join(root, "_jobs"), args.cluster, args.partition,
                                       args.gpus, args.cpus, args.time, name=f"adarand-table{table.name}")
    max_parallel = args.max_parallel if args.max_parallel is not None else (1 if args.cluster == "local" else 0)
    failed = reproduce.launch(runs, executor, REPO_ROOT, nproc_per_node=args.gpus, max_parallel=max_parallel,
                              progress=not args.no_progress)
    for run, error in failed.items():
        print(f"FAILED {run.output_dir}: {error}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
