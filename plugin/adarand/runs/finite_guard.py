"""Divergence detection without a host synchronisation per step.

:class:`FiniteGuard` keeps, on the device, the first iteration at which each named loss
term was NaN/Inf (``update`` is a few device ops, no read-back). The trainer calls
``check`` only where it reads values back anyway (log period, end of an epoch, before an
evaluation or a checkpoint); it raises ``FloatingPointError`` naming the term and the
iteration. :func:`check_finite_weights` does the same for a model's parameters and
buffers, before anything is saved.
"""
from collections.abc import Callable, Iterable, Mapping, Sequence

import torch


class FiniteGuard:
    """First non-finite iteration of each of ``names`` (-1 = always finite so far), on ``device``.

    ``scaled_by``: {term: the config keys that scale it}; the error then names the term(s) that went
    non-finite first and their keys (a term without an entry, e.g. the total, gets no advice)."""

    def __init__(self, names: Iterable[str], device: torch.device | str | None = None,
                 scaled_by: Mapping[str, str] | None = None):
        self.names = list(names)
        self.scaled_by = dict(scaled_by or {})
        self.first_bad = torch.full((len(self.names),), -1, dtype=torch.long, device=device)
        # (iteration, the terms' values) of the latest update, kept on the device
        self.last: tuple[int, torch.Tensor] | None = None

    @torch.no_grad()
    def update(self, iteration: int, *terms: torch.Tensor) -> None:
        """Record ``terms`` (scalars, in the order of ``names``) of ``iteration``; no host sync."""
        values = torch.stack([t.detach().float().reshape(()) for t in terms]).to(self.first_bad.device)
        newly_bad = ~torch.isfinite(values) & (self.first_bad < 0)
        self.first_bad = torch.where(newly_bad, torch.full_like(self.first_bad, iteration), self.first_bad)
        self.last = (iteration, values)

    def bad_terms(self) -> list:
        """[(name, iteration)] of the terms that went non-finite (reads the flag back)."""
        return [(n, i) for n, i in zip(self.names, self.first_bad.tolist()) if i >= 0]

    def check(self, where: str) -> None:
        """Raise ``FloatingPointError`` if any term went non-finite; ``where`` says when (e.g. "epoch 3")."""
        bad = self.bad_terms()
        if bad:
            terms = ", ".join(f"{name} first at iteration {it}" for name, it in bad)
            raise FloatingPointError(f"training diverged ({where}): non-finite loss term(s): {terms}. "
                                     f"Nothing was saved from this point; {self.advice(bad)}.")

    def last_step_advice(self) -> str | None:
        """When the weights went non-finite while every term stayed finite: the largest scaled term of the
        latest step and its keys (reads the values back; for error messages). ``None`` without one."""
        if self.last is None or not self.scaled_by:
            return None
        iteration, values = self.last
        named = [(n, v) for n, v in zip(self.names, values.abs().tolist()) if n in self.scaled_by]
        name, value = max(named, key=lambda item: item[1])
        shown = ", ".join(f"{n} {v:.3g}" for n, v in named)
        return (f"at iteration {iteration}, the last one recorded ({shown}), {name} was the largest term, lower "
                f"what scales it: {self.scaled_by[name]}")

    def advice(self, bad: Sequence[tuple[str, int]]) -> str:
        """What to lower: the keys scaling the term(s) that went non-finite first (the earliest iteration)."""
        first = min(it for _, it in bad)
        culprits = [(n, self.scaled_by[n]) for n, it in bad if it == first and n in self.scaled_by]
        if not culprits:
            return "lower the learning rate"
        return "; ".join(f"{name} went non-finite first, lower what scales it: {keys}" for name, keys in culprits)


@torch.no_grad()
def check_finite_weights(module: torch.nn.Module, where: str,
                         advice_fn: Callable[[], str | None] | None = None) -> None:
    """Raise ``FloatingPointError`` naming the first parameter/buffer of ``module`` with NaN/Inf
    (``advice_fn``: called only then, returns what to change; default, or None: "lower the learning rate")."""
    tensors = [(n, t) for n, t in list(module.named_parameters()) + list(module.named_buffers())
               if t.is_floating_point() or t.is_complex()]
    if not tensors:
        return
    finite = torch.stack([torch.isfinite(t).all() for _, t in tensors])
    if bool(finite.all()):
        return
    name = tensors[int((~finite).nonzero()[0])][0]
    advice = advice_fn() if advice_fn is not None else None
    raise FloatingPointError(f"training diverged ({where}): weight {name!r} (and maybe others) is NaN/Inf. "
                             f"Nothing was saved from this point; {advice or 'lower the learning rate'}.")
