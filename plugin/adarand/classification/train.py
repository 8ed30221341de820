"""Fine-tune an image classifier with AdaRand or any other regularizer / baseline.

    python -m adarand.classification.train --config-file CONFIG [--resume [--allow-config-change]] \
        [--eval-only] [KEY VALUE ...]
    torchrun --nproc_per_node 4 -m adarand.classification.train --config-file ... SOLVER.BATCH_SIZE 64

(``adarand-train-cls``, or ``tools/train_cls.py`` in a checkout, is the same command.) A shipped config:
``adarand.model_zoo.get_config_file("classification/cars_r50_adarand.yaml")``.
"""
from .cli import main


def cli() -> None:
    """Run :func:`adarand.classification.cli.main` on the command line, with this module's usage."""
    main(description=__doc__)


if __name__ == "__main__":
    cli()
