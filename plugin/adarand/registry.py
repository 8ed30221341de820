"""Builders by name, the one dispatch style of the package (regularizers, baselines, data sets,
optimizers, learning-rate schedules); the options a builder takes are read from its signature."""
import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any


class Registry:
    """``{name: builder}``; :meth:`build` refuses an option the builder does not take, naming it.

    Args:
        kind: what the builders make, for error messages ("regularizer", "baseline", "dataset").
        builders: ``{name: callable}``.
        leading: the builders' leading positional parameters, which are not options
            (e.g. ``("num_classes", "feat_dim")``).
    """

    def __init__(self, kind: str, builders: Mapping[str, Callable[..., Any]], leading: Iterable[str] = ()):
        self.kind, self._builders, self._leading = kind, dict(builders), tuple(leading)

    def names(self) -> list[str]:
        return list(self._builders)

    def get(self, name: str) -> Callable[..., Any]:
        """The builder registered as ``name``; ``ValueError`` naming the available ones otherwise."""
        if name not in self._builders:
            raise ValueError(f"unknown {self.kind} {name!r}; available: {', '.join(self._builders)}")
        return self._builders[name]

    def options(self, name: str) -> dict[str, Any]:
        """``{option: default}`` of builder ``name``; ``ValueError`` for an unknown name."""
        params = inspect.signature(self.get(name)).parameters.values()
        return {p.name: p.default for p in params if p.name not in self._leading}

    def build(self, name: str, *leading: Any, **options: Any) -> Any:
        """``builders[name](*leading, **options)``, after checking every option is one it takes."""
        accepted = self.options(name)
        unknown = sorted(set(options) - set(accepted))
        if unknown:
            raise ValueError(f"{self.kind} {name!r} does not take option(s) {unknown}; it takes {sorted(accepted)}")
        return self._builders[name](*leading, **options)
