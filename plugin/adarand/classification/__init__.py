"""Classification fine-tuning: datasets, transforms, backbones, trainer and baselines.

Import the submodules you need (``adarand.classification.trainer.ClassificationTrainer``,
``adarand.classification.datasets`` ...); this package imports nothing itself, so
``import adarand`` stays torch-only.
"""
