#!/usr/bin/env python
"""The paper's tables as runs of tools/train_cls.py (3 seeds a cell), with the rows, cells and settings
the text does not fix reconstructed by us (listed under each table by tools/summarize.py --table;
docs/fidelity.md).

    python tools/reproduce.py --table 3 --dry-run                  # one command a line
    python tools/reproduce.py --table 3 --launch --data-dir /data  # submitit, local executor
    python tools/reproduce.py --table 2 --launch --cluster slurm --partition gpu --gpus 1 \\
        --weights r50simclr=/w/simclr.pth r50barlowtwins=/w/bt.pth r50clip=/w/clip_rn50.pth \\
        vitb32clip=/w/clip_vitb32.pth vitb16clip=/w/clip_vitb16.pth
    python tools/summarize.py --table 3                            # ours beside the paper's

Tables: 1-5, alpha (App. A's alpha sweep), lambda (Fig. IV's lambda sweep), clip-imagenet (App. B.1)
and digits (our CPU study). --dry-run --check also loads every config and checks every weights file
named, starting nothing. Runs go to ROOT/<cell id>/seed<k>; a cell
shared by several tables (e.g. FT on Cars) is one set of runs. --launch skips finished runs
(a results.json holding a valid test_top1) and resumes interrupted ones (last.pth, --resume); a
truncated, empty or otherwise unfinished results.json is listed (UNFINISHED) and its run resumed or
run again. Trailing KEY VALUE pairs are added to every command (e.g. SOLVER.EPOCHS 1 for a smoke
test, in its own --root; also straight after --cells / --seeds, or after --), except the keys the
grid sets (SEED, OUTPUT_DIR, a cell's method and the keys its config file sets, a cell's own keys,
DATASET.ROOT / MODEL.WEIGHTS with --data-dir / --weights). A run directory recorded with another
config than the grid's (config.yaml, changes on resume) is refused by --launch, or moved to
<dir>.old<k> and rerun with --rerun-differing.
"""
import os
import sys

from adarand_projects.paper.reproduce import main

if __name__ == "__main__":
    sys.exit(main(repo_root=os.path.dirname(os.path.dirname(os.path.abspath(__file__))), description=__doc__))
