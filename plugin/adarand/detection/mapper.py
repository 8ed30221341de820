"""``NamedErrorsMapper``: Detectron2's ``DatasetMapper`` whose read errors name the image file.

A truncated or corrupt JPEG otherwise surfaces as PIL's bare ``OSError: image file is
truncated`` from deep inside a data-loader worker.
"""
from detectron2.data import DatasetMapper


class NamedErrorsMapper(DatasetMapper):
    def __call__(self, dataset_dict):
        try:
            return super().__call__(dataset_dict)
        except (OSError, SyntaxError, ValueError) as err:
            message = f"cannot read {dataset_dict.get('file_name', '?')}: {type(err).__name__}: {err}"
            raise (ValueError(message) if isinstance(err, ValueError) else OSError(message)) from err
