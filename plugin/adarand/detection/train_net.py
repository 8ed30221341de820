"""Fine-tune Mask R-CNN with AdaRand (or any regularizer of the library) in Detectron2.

    python -m adarand.detection.train_net --config-file CONFIG [--num-gpus 8] [--resume [--allow-config-change]] \
        [--eval-only] [KEY VALUE ...]

(``adarand-train-net``, or ``tools/train_net.py`` in a checkout, is the same command.) A shipped config:
``adarand.model_zoo.get_config_file("detection/mask_rcnn_R_50_FPN_voc2012_single_adarand.yaml")``.
"""
from collections.abc import Sequence
from typing import Any

from detectron2.engine import default_argument_parser, launch
from detectron2.evaluation import verify_results
from detectron2.utils import comm

from adarand.runs.resume import DET_SAFE_RESUME_KEYS, add_resume_arguments

from .checkpoint import SafeDetectionCheckpointer
from .run_setup import setup_cfg
from .trainer import AdaRandDetectionTrainer, load_weights_and_prior


def main(args: Any) -> Any:
    """One process's run: train (or ``--eval-only``: evaluate ``MODEL.WEIGHTS``) and return the results.

    Args:
        args: the namespace of Detectron2's ``default_argument_parser`` with the resume arguments.
    """
    cfg = setup_cfg(args, claim_output=not args.eval_only)
    if args.eval_only:
        model = AdaRandDetectionTrainer.build_model(cfg)
        load_weights_and_prior(SafeDetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR, exact_shapes=True),
                               cfg.MODEL.WEIGHTS, args.resume, init_prior=None)  # as a run starts, without the prior
        res = AdaRandDetectionTrainer.test(cfg, model)
        if comm.is_main_process():
            verify_results(cfg, res)
        return res

    trainer = AdaRandDetectionTrainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def cli(argv: Sequence[str] | None = None) -> None:
    """Parse ``argv`` (default: the command line) and launch :func:`main` on ``--num-gpus`` processes.

    Args:
        argv: the arguments, as after the program's name.
    """
    args = add_resume_arguments(default_argument_parser(), DET_SAFE_RESUME_KEYS, "iteration").parse_args(argv)
    print("Command Line Args:", args)
    launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args,))


if __name__ == "__main__":
    cli()
