"""The core's public API documents its arguments (TLlib-style Args / Shape / Returns sections), so the docs
cannot rot silently: a public callable or public method that takes arguments and has no "Args:" section of its
own fails here (a class's own docstring counts, not one inherited from its base)."""
import inspect
import os
import subprocess
import sys

import pytest

import adarand
import adarand.ops
import adarand.runs.stats_cache


def _public():
    names = [(f"adarand.{n}", getattr(adarand, n)) for n in adarand.__all__]
    names += [(f"adarand.ops.{n}", getattr(adarand.ops, n)) for n in adarand.ops.__all__]
    names += [(f"adarand.dense.{n}", getattr(adarand.dense, n)) for n in adarand.dense.__all__]
    names += [(f"adarand.runs.stats_cache.{n}", getattr(adarand.runs.stats_cache, n))
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


# ---------------------------------------------------------------- the rendered reference (issue 30, item 2)
DOCS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "api")


def _documented_names():
    """Every public name the reference promises: each ``__all__`` of the documented packages, the integrations'
    public classes, the trainers' entry points."""
    import adarand.detection
    import adarand.integrations.lightning
    import adarand.integrations.transformers
    import adarand.model_zoo

    names = {f"adarand.{n}" for n in adarand.__all__}
    for module in (adarand.ops, adarand.model_zoo, adarand.detection):
        names |= {f"{module.__name__}.{n}" for n in module.__all__}
    for module in (adarand.integrations.lightning, adarand.integrations.transformers):
        names |= {f"{module.__name__}.{n}" for n, obj in vars(module).items() if not n.startswith("_")
                  and inspect.isclass(obj) and obj.__module__ == module.__name__}
    return names | {"adarand.runs.stats_cache.load_or_compute_stats", "adarand.runs.stats_cache.state_dict_digest",
                    "adarand.classification.trainer.ClassificationTrainer", "adarand.classification.cli.main",
                    "adarand.classification.train.cli", "adarand.detection.train_net.main",
                    "adarand.detection.train_net.cli"}


def test_the_reference_sources_document_each_package():
    """docs/api/*.rst name every module whose names :func:`_documented_names` lists."""
    sources = "".join(open(os.path.join(DOCS, f), encoding="utf-8").read() for f in os.listdir(DOCS)
                      if f.endswith(".rst"))
    modules = {name.rpartition(".")[0] for name in _documented_names()}
    assert not [m for m in modules if f".. automodule:: {m}\n" not in sources]


@pytest.mark.slow
def test_the_reference_builds_without_warnings_and_holds_every_public_name(tmp_path):
    from sphinx.util.inventory import InventoryFile  # the docs extra (make setup installs it)

    proc = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", DOCS,
                           str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-4000:]
    with open(tmp_path / "objects.inv", "rb") as f:
        inventory = InventoryFile.load(f, "", os.path.join)
    built = {name for entries in inventory.values() for name in entries}
    assert not sorted(_documented_names() - built)
