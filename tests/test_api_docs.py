"""The core's public API documents its arguments (TLlib-style Args / Shape sections), so the docs cannot rot
silently: a public callable that takes arguments and has no "Args:" section fails here."""
import inspect

import pytest

import adarand
import adarand.ops
import adarand.stats_cache


def _public():
    names = [(f"adarand.{n}", getattr(adarand, n)) for n in adarand.__all__]
    names += [(f"adarand.ops.{n}", getattr(adarand.ops, n)) for n in adarand.ops.__all__]
    names += [(f"adarand.stats_cache.{n}", getattr(adarand.stats_cache, n))
              for n in ("load_or_compute_stats", "state_dict_digest")]
    return [(name, obj) for name, obj in names if callable(obj)]


def _takes_arguments(obj):
    target = obj.__init__ if inspect.isclass(obj) else obj
    try:
        params = inspect.signature(target).parameters
    except (TypeError, ValueError):
        return False
    return any(p not in ("self", "cls") for p in params)


@pytest.mark.parametrize("name,obj", _public(), ids=[name for name, _ in _public()])
def test_public_callable_documents_its_arguments(name, obj):
    doc = inspect.getdoc(obj) or ""
    assert doc, f"{name} has no docstring"
    if _takes_arguments(obj):
        assert "Args:" in doc, f"{name} takes arguments but its docstring has no Args: section"


@pytest.mark.parametrize("cls", [adarand.Regularizer, adarand.ClassConditionalPrior, adarand.TrainingDiagnostics,
                                 adarand.ClassStats])
def test_tensor_classes_state_their_shapes(cls):
    assert "Shape" in (inspect.getdoc(cls) or ""), cls.__name__
