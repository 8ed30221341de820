"""AdaRand inside other training frameworks, each built on :func:`adarand.attach`.

- :mod:`adarand.integrations.lightning`: ``AdaRandCallback`` for PyTorch Lightning, with the regularizer
  attached in the LightningModule (``pip install adarand[lightning]``);
- :mod:`adarand.integrations.transformers`: ``AdaRandMixin`` for any Hugging Face ``Trainer`` subclass, and
  ``AdaRandTrainer``, the mixin on ``Trainer`` (``pip install adarand[transformers]``).

Importing this package imports neither framework; each submodule imports its own.
See docs/integrations.md.
"""
