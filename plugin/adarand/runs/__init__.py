"""Run safety, beside the method: what keeps a run's files and its resumption honest.

- :mod:`adarand.runs.output_dir`: one run per output directory (its lock, the refusal of another run's checkpoint,
  the temporaries a killed save left).
- :mod:`adarand.runs.resume`: the resume policy (which config changes a ``--resume`` may make, and their record).
- :mod:`adarand.runs.stats_cache`: class statistics reused only for the identity that produced them.
- :mod:`adarand.runs.finite_guard`: divergence flags kept on the device, checked where values are read anyway.

The method itself (the prior, the regularizers, the kernels) imports none of these; every part reads and
writes files through :mod:`adarand.files` (safe loading, the one atomic writer), which sits below both.
"""
