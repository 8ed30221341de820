"""AdaRand inside other training frameworks, each built on :func:`adarand.attach`.

- :mod:`adarand.integrations.lightning`: ``AdaRandCallback`` for PyTorch Lightning (``pip install adarand[lightning]``);
- :mod:`adarand.integrations.transformers`: ``AdaRandTrainer``, a Hugging Face ``Trainer``
  (``pip install adarand[transformers]``).

Importing this package imports neither framework; each submodule imports its own.
See docs/integrations.md.
"""
