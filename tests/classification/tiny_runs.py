"""Command-line overrides of a tiny classification run (tiny_cnn, 16 px, batch 8, no workers)."""
NUM_CLASSES, PER_CLASS = 3, 10  # the data_root tree (conftest.py)


def tiny_opts(data_root, out, **values):
    """Flat ``KEY VALUE`` list for ``load_cfg`` / ``train_cls``: the tiny run, then ``values``."""
    base = {"MODEL.BACKBONE": "tiny_cnn", "MODEL.WEIGHTS": "", "DATASET.NAME": "imagefolder",
            "DATASET.ROOT": str(data_root), "DATASET.VAL_FRACTION": 0.2, "INPUT.SIZE": 16,
            "SOLVER.BATCH_SIZE": 8, "DATALOADER.NUM_WORKERS": 0, "TEST.BATCH_SIZE": 16, "OUTPUT_DIR": str(out)}
    return [str(x) for kv in {**base, **values}.items() for x in kv]
