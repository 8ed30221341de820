"""Dataset mappers of the detection trainers.

``NamedErrorsMapper``: Detectron2's ``DatasetMapper`` whose read errors name the image file (a truncated or
corrupt JPEG otherwise surfaces as PIL's bare ``OSError: image file is truncated`` from deep inside a
data-loader worker). ``SingleCategoryMapper``: refuses an image of several categories (``LABELS "image"``).
"""
from collections.abc import Callable

from detectron2.data import DatasetMapper


class NamedErrorsMapper(DatasetMapper):
    def __call__(self, dataset_dict):
        try:
            return super().__call__(dataset_dict)
        except (OSError, SyntaxError, ValueError) as err:
            message = f"cannot read {dataset_dict.get('file_name', '?')}: {type(err).__name__}: {err}"
            raise (ValueError(message) if isinstance(err, ValueError) else OSError(message)) from err


class SingleCategoryMapper:
    """Wraps a dataset mapper: an image whose annotations have several categories is an error naming it."""

    def __init__(self, mapper: Callable[[dict], dict]):
        self.mapper = mapper

    def __call__(self, dataset_dict: dict) -> dict:
        categories = sorted({a["category_id"] for a in dataset_dict.get("annotations", ()) if not a.get("iscrowd", 0)})
        if len(categories) > 1:
            raise ValueError(f"MODEL.ADARAND.LABELS 'image' needs single-category images; "
                             f"{dataset_dict.get('file_name', dataset_dict.get('image_id'))} has categories "
                             f"{categories} (train on a single-category split such as voc_2012_seg_train_single, "
                             "or use LABELS 'roi')")
        return self.mapper(dataset_dict)
