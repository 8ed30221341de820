"""Type hints of the public API (issue 30, item 1): mypy passes on plugin/adarand with the checked-in config
(pyproject.toml's [tool.mypy]), and every public callable of the core API is annotated completely."""
import inspect
import os
import subprocess
import sys

import pytest

import adarand
import adarand.model_zoo
import adarand.ops
import adarand.stats_cache

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _core_callables():
    """The names of ``adarand.__all__``, ``adarand.ops.__all__``, ``adarand.model_zoo.__all__`` and the
    statistics cache, with the public methods (and ``__init__``) their classes define."""
    modules = [(adarand, adarand.__all__), (adarand.ops, adarand.ops.__all__),
               (adarand.model_zoo, adarand.model_zoo.__all__),
               (adarand.stats_cache, ["load_or_compute_stats", "state_dict_digest"])]
    out = {}
    for module, names in modules:
        for name in names:
            obj = getattr(module, name)
            if inspect.isclass(obj):
                for attr, value in vars(obj).items():
                    func = value.__func__ if isinstance(value, (classmethod, staticmethod)) else value
                    if inspect.isfunction(func) and (not attr.startswith("_") or attr == "__init__"):
                        out[f"{module.__name__}.{name}.{attr}"] = func
            elif inspect.isfunction(obj):
                out[f"{module.__name__}.{name}"] = obj
    return out


def _unannotated(func):
    sig = inspect.signature(func)
    missing = [name for name, p in sig.parameters.items()
               if name not in ("self", "cls") and p.annotation is inspect.Parameter.empty]
    if func.__name__ != "__init__" and sig.return_annotation is inspect.Signature.empty:
        missing.append("return")
    return missing


def test_every_public_callable_of_the_core_is_annotated():
    callables = _core_callables()
    assert len(callables) > 80
    missing = {name: m for name, func in callables.items() if (m := _unannotated(func))}
    assert not missing, missing


def test_the_check_can_fail():
    def half(x: int, y):
        return x

    assert _unannotated(half) == ["y", "return"]


def test_py_typed_is_shipped():
    assert os.path.isfile(os.path.join(os.path.dirname(adarand.__file__), "py.typed"))


@pytest.mark.slow
def test_mypy_passes_on_the_library():
    proc = subprocess.run([sys.executable, "-m", "mypy", "--config-file", os.path.join(REPO, "pyproject.toml"),
                           "--cache-dir", os.path.join(REPO, ".mypy_cache")], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
