"""Detection stability study: a box-head probe and seeded short runs (tools/studies/diagnose_det.py)."""
