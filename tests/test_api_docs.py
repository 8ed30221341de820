"""The core's public API documents its arguments (TLlib-style Args / Shape / Returns sections), so the docs
cannot rot silently: a public callable or public method that takes arguments and has no "Args:" section of its
own fails here (a class's own docstring counts, not one inherited from its base)."""
import inspect

import pytest

import adarand
import adarand.ops
import adarand.stats_cache


def _public():
    names = [(f"adarand.{n}", getattr(adarand, n)) for n in adarand.__all__]
    names += [(f"adarand.ops.{n}", getattr(adarand.ops, n)) for n in adarand.ops.__all__]
    names += [(f"adarand.dense.{n}", getattr(adarand.dense, n)) for n in adarand.dense.__all__]
    names += [(f"adarand.stats_cache.{n}", getattr(adarand.stats_cache, n))
              for n in ("load_or_compute_stats", "state_dict_digest")]
    return [(name, obj) for name, obj in names if callable(obj)]


def _public_methods():
    """Public methods with arguments defined (not inherited) by the public classes, e.g. AdaRand.step."""
    out = []
    for name, cls in _public():
        if not inspect.isclass(cls):
            continue
        for attr, value in vars(cls).items():
            if attr.startswith("_"):
                continue
            func = value.__func__ if isinstance(value, (classmethod, staticmethod)) else value
            if inspect.isfunction(func) and _takes_arguments(func):  # extra_repr, to_dict ... need no Args
                out.append((f"{name}.{attr}", func))
    return out


def _takes_arguments(obj):
    target = obj.__init__ if inspect.isclass(obj) else obj
    try:
        params = inspect.signature(target).parameters
    except (TypeError, ValueError):
        return False
    return any(p not in ("self", "cls") for p in params)


def _own_doc(obj):
    """The object's own docstring: ``inspect.getdoc`` would hand a subclass its base's (and its Args:)."""
    return inspect.cleandoc(obj.__doc__) if obj.__doc__ else ""


_CALLABLES = _public() + _public_methods()


@pytest.mark.parametrize("name,obj", _CALLABLES, ids=[name for name, _ in _CALLABLES])
def test_public_callable_documents_its_arguments(name, obj):
    doc = _own_doc(obj)
    assert doc, f"{name} has no docstring"
    if _takes_arguments(obj):
        assert "Args:" in doc, f"{name} takes arguments but its docstring has no Args: section"


def test_the_check_can_fail():
    """A callable with arguments and a docstring without Args: is caught (the test above is not vacuous)."""
    def undocumented(features, labels):
        """Only an equation."""

    assert _takes_arguments(undocumented) and "Args:" not in _own_doc(undocumented)
    assert len(_CALLABLES) > 40


@pytest.mark.parametrize("cls", [adarand.Regularizer, adarand.ClassConditionalPrior, adarand.TrainingDiagnostics,
                                 adarand.ClassStats, adarand.ClassStatsAccumulator, adarand.PriorAdam,
                                 adarand.AdaptivePrior])
def test_tensor_classes_state_their_shapes(cls):
    assert "Shape" in _own_doc(cls), cls.__name__
