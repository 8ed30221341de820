"""Research and reproduction code beside the library (not part of ``import adarand``).

What ``tools/bench/``, ``tools/studies/`` and the reproduction entry points (``tools/reproduce.py``,
``tools/summarize.py``, ``tools/plot_features.py``, ``tools/make_demo_voc.py``) import; it uses the
library, the library never imports it:

- :mod:`adarand_projects.bench`: round-robin timing with paired bootstrap intervals (``timing``),
  kernel launches of one step (``launch_count``);
- :mod:`adarand_projects.paper`: the paper's tables cell by cell (``reproduce``), ours beside the
  published numbers (``paper_table`` + ``paper_results.json``), summaries, paired comparisons, plots;
- :mod:`adarand_projects.detection_demo`: the offline detection demo set in Pascal VOC's layout;
- :mod:`adarand_projects.stability`: the detection stability probe (``tools/studies/diagnose_det.py``).
"""
