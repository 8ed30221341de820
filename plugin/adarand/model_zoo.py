"""The shipped configs, found the way Detectron2's ``model_zoo.get_config_file`` finds its own.

The checkout's ``configs/`` travels inside the package as ``adarand/configs`` (a link in the checkout,
package data in the wheel), so an installed adarand runs the paper's settings without a checkout::

    from adarand import model_zoo
    model_zoo.get_config_file("detection/mask_rcnn_R_50_FPN_voc2012_single_adarand.yaml")  # an absolute path

and that path goes to ``python -m adarand.detection.train_net --config-file``.
"""
import os

__all__ = ["CONFIG_ROOT", "get_config_file", "list_config_files"]

CONFIG_ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")


def get_config_file(config_path: str) -> str:
    """The absolute path of a shipped config.

    Args:
        config_path: relative to ``configs/``, e.g. ``"classification/cars_r50_adarand.yaml"``.

    Returns:
        The file's path; a name that is not shipped is a ``FileNotFoundError`` naming it and where it was
        looked for.
    """
    path = os.path.normpath(os.path.join(CONFIG_ROOT, config_path))
    if not path.startswith(os.path.join(os.path.normpath(CONFIG_ROOT), "")) or not os.path.isfile(path):
        raise FileNotFoundError(f"{config_path!r} is not a shipped config (looked in {CONFIG_ROOT}); "
                                f"adarand.model_zoo.list_config_files() lists them")
    return path


def list_config_files(subdir: str = "") -> list[str]:
    """The shipped configs' names (what :func:`get_config_file` takes), sorted.

    Args:
        subdir: only those under this folder of ``configs/`` (``"classification"``, ``"detection"``).
    """
    root = os.path.join(CONFIG_ROOT, subdir)
    names = [os.path.relpath(os.path.join(folder, name), CONFIG_ROOT)
             for folder, _, files in os.walk(root, followlinks=True)
             for name in files if name.endswith((".yaml", ".py"))]
    return sorted(name.replace(os.sep, "/") for name in names)
