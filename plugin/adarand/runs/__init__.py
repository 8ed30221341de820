"""Run safety, beside the method: what keeps a run's files and its resumption honest.

- :mod:`adarand.runs.files`: safe loading (``weights_only``), the one atomic writer, the output-directory lock.
- :mod:`adarand.runs.resume`: the resume policy (which config changes a ``--resume`` may make, and their record).
- :mod:`adarand.runs.stats_cache`: class statistics reused only for the identity that produced them.
- :mod:`adarand.runs.finite_guard`: divergence flags kept on the device, checked where values are read anyway.

The method itself (the prior, the regularizers, the kernels) imports none of these but the file helpers
(:class:`adarand.ClassStats` saves and loads through them); the trainers use them all.
"""
