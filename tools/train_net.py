#!/usr/bin/env python
"""Fine-tune Mask R-CNN with AdaRand (or any regularizer of the library) in Detectron2.

    python tools/train_net.py --config-file configs/detection/mask_rcnn_R_50_FPN_voc2012_single_adarand.yaml
    python tools/train_net.py --config-file ... --num-gpus 8 [--resume [--allow-config-change]] [KEY VALUE ...]
    python tools/train_net.py --config-file ... --eval-only MODEL.WEIGHTS output/.../model_final.pth
    python tools/train_net.py --config-file ... --eval-only MODEL.WEIGHTS ... TEST.VIS_NUM_IMAGES 20
        (also draws ground truth | predictions of the first 20 test images to OUTPUT_DIR/inference/vis/)

The checkout's entry point of ``adarand.detection.train_net`` (``python -m adarand.detection.train_net``
from an installed wheel).
"""
from adarand.detection.train_net import cli, main  # noqa: F401  (main: one process's run)

if __name__ == "__main__":
    cli()
