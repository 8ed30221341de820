"""``SafeDetectionCheckpointer``: Detectron2's checkpointer, reading nothing that can execute code.

- ``.pth`` and other torch files: ``torch.load(weights_only=True)`` (:func:`adarand.files.load_torch`);
  a file holding other objects is refused with an error naming it.
- ``.pkl`` (Detectron2 / Caffe2 model zoo): unpickled with an allow-list of numpy array
  and plain-container constructors only, so a payload cannot run.
- Loading a prior (mu, sigma, running means) with NaN/Inf is an error naming the file.
- ``exact_shapes=True`` (``--eval-only``): a tensor of the file whose shape differs from the model's (a
  checkpoint of another class count) is an error naming the file and the shapes, where Detectron2 would
  skip it with a warning and evaluate that layer untrained.
- Saving: refuses a model with NaN/Inf weights (``FloatingPointError``) and writes through
  :func:`adarand.files.save_torch` (unique temporary file, fsync, rename), so a crash or a
  full disk never leaves half a checkpoint. ``save_dir`` must be a local directory.
"""
import os
from typing import Any

import torch
from detectron2.checkpoint import DetectionCheckpointer

from adarand.files import load_pickle, load_torch, save_torch, write_text
from adarand.runs.finite_guard import check_finite_weights
from adarand.prior import naming_checkpoint

# (module, name) pairs a model-zoo .pkl may reference: numpy arrays, dtypes and scalars.
_PICKLE_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("collections", "OrderedDict"), ("_codecs", "encode"),
}


def load_pickle_weights(path: str) -> Any:
    """A model-zoo ``.pkl`` holding only numpy arrays and plain containers; anything else is refused."""
    return load_pickle(path, what="weights file", allowed=_PICKLE_ALLOWED)


class SafeDetectionCheckpointer(DetectionCheckpointer):
    """DetectionCheckpointer with safe loading, atomic writes and no non-finite checkpoint; ``exact_shapes``:
    refuse a file whose tensors do not fit the model (module docstring)."""

    def __init__(self, model: torch.nn.Module, save_dir: str = "", *, exact_shapes: bool = False, **kwargs: Any):
        super().__init__(model, save_dir, **kwargs)
        self.exact_shapes = exact_shapes
        self._loading: str | None = None

    def load(self, path: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        self._loading = path
        with naming_checkpoint(path):  # a prior with NaN/Inf is refused, naming the file
            return super().load(path, *args, **kwargs)

    def _load_model(self, checkpoint):
        incompatible = super()._load_model(checkpoint)
        wrong = sorted(incompatible.incorrect_shapes if incompatible is not None else (),
                       key=lambda item: "cls_score" not in item[0])  # the class count first
        if self.exact_shapes and wrong:
            shapes = "; ".join(f"{key} {tuple(ours)} in the file vs {tuple(model)} in the model"
                               for key, ours, model in wrong[:4])
            raise ValueError(f"{self._loading} does not fit the model: {shapes}{' ...' if len(wrong) > 4 else ''} "
                             f"({len(wrong)} tensor(s)); a checkpoint of another class count "
                             "(MODEL.ROI_HEADS.NUM_CLASSES) or model? Its layers would be evaluated untrained")
        return incompatible

    def _load_file(self, filename):
        if filename.endswith(".pkl"):
            data = load_pickle_weights(filename)
            if not isinstance(data, dict):
                raise ValueError(f"weights file {filename} does not hold a dict")
            if "model" in data and "__author__" in data:  # Detectron2 model-zoo layout
                self.logger.info("Reading a file from '%s'", data["__author__"])
                return data
            blobs = data.get("blobs", data)  # Caffe2 / Detectron1 layout
            weights = {k: v for k, v in blobs.items() if not k.endswith("_momentum")}
            return {"model": weights, "__author__": "Caffe2", "matching_heuristics": True}
        if filename.endswith(".pyth"):
            load_torch(filename, what="weights file")  # refuses unsafe content before upstream reads it
        return super()._load_file(filename)

    def _torch_load(self, f):
        return load_torch(f, what="checkpoint")

    def save(self, name: str, **kwargs: Any) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        check_finite_weights(self.model, f"before saving checkpoint {name}")
        data = {"model": self.model.state_dict()}
        data.update({key: obj.state_dict() for key, obj in self.checkpointables.items()})
        data.update(kwargs)
        basename = f"{name}.pth"
        path = os.path.join(self.save_dir, basename)
        self.logger.info("Saving checkpoint to %s", path)
        save_torch(data, path)
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        if self.save_to_disk:
            write_text(os.path.join(self.save_dir, "last_checkpoint"), last_filename_basename)
