#!/usr/bin/env python
"""Fine-tune an image classifier with AdaRand or any other regularizer / baseline.

    python tools/train_cls.py --config-file configs/classification/cars_r50_adarand.yaml \
        [--resume [--allow-config-change]] [--eval-only] [--debug] [KEY VALUE ...]
    torchrun --nproc_per_node 4 tools/train_cls.py --config-file ... SOLVER.BATCH_SIZE 64

Under torchrun each process joins the group through env:// (NCCL on CUDA, gloo on CPU);
SOLVER.BATCH_SIZE is the total over all processes. The trainer is
``adarand.classification.ClassificationTrainer`` (Detectron2's DefaultTrainer shape).
Options go before the KEY VALUE overrides. A user error (bad key or value, missing data or
weights, a directory in use ...) is one ``error:`` line and exit status 2; --debug shows its traceback.
"""
from adarand.classification.cli import console_main

if __name__ == "__main__":
    console_main(description=__doc__)
