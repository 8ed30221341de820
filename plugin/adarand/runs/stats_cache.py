"""Load or compute class statistics, guarded by the identity of what produced them.

A statistics file records, in ``meta["identity"]``, a plain dict of one shape for every trainer
(:func:`statistics_identity`): which trainer computed them and a hash of the extractor's weights
(:func:`extractor_identity`, :func:`state_dict_digest`), the settings they depend on
(architecture, dataset, root, split, fraction, split seed, transform, ...: the caller's), and for
a detector's statistics the branch. Both trainers go through :func:`load_or_compute_stats`:

- cached file (the trainer's own cache in OUTPUT_DIR) with the run's identity: reused;
- cached file with another identity (or none): recomputed and overwritten, and the log
  names the keys that differ; a cache that cannot be read is an error naming it;
- file given explicitly by the user with another identity: refused (``ValueError``
  naming the file and the keys), never silently replaced;
- explicit file missing: ``FileNotFoundError``.
"""
import hashlib
import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

import torch

from ..stats import ClassStats

logger = logging.getLogger(__name__)
IDENTITY_KEY = "identity"


def state_dict_digest(module_or_state: torch.nn.Module | dict) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of a state dict's tensors (in key order).

    Args:
        module_or_state: an ``nn.Module`` or a state dict (non-tensor entries are skipped).

    Returns:
        the hex digest (identifies the weights a set of statistics was computed with).
    """
    state = module_or_state.state_dict() if hasattr(module_or_state, "state_dict") else module_or_state
    h = hashlib.sha256()
    for name in sorted(state):
        value = state[name]
        if not torch.is_tensor(value):
            continue
        t = value.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def extractor_identity(trainer: str, weights: torch.nn.Module | dict) -> dict[str, str]:
    """Who computed a set of class statistics, and with which weights.

    Args:
        trainer: the trainer that computed them ("classification", "detection").
        weights: the extractor (an ``nn.Module``) or its state dict, as :func:`state_dict_digest` takes it.

    Returns:
        ``{"trainer": trainer, "weights_sha256": digest}``, the first part of :func:`statistics_identity`.
    """
    return {"trainer": trainer, "weights_sha256": state_dict_digest(weights)}


def statistics_identity(extractor: Mapping[str, str], settings: Mapping[str, Any],
                        branch: str | None = None) -> dict[str, Any]:
    """The identity recorded with a set of class statistics (``meta["identity"]``), the one shape every
    trainer uses, compared key by key when a file is reused (:func:`load_or_compute_stats`).

    Args:
        extractor: :func:`extractor_identity` (computed once for the statistics of every branch).
        settings: what else the statistics depend on (architecture, data, transform ...), a plain dict;
            add a key for any new setting that changes them.
        branch: the detector's branch the statistics belong to; None for a model of one (no key).

    Returns:
        ``{**extractor, **settings}``, plus ``"branch"`` when given.
    """
    identity = {**extractor, **settings}
    if branch is not None:
        identity["branch"] = branch
    return identity


def _plain(identity: dict) -> dict:
    """Identity as stored (tuples become lists), so it compares equal after a round trip."""
    def convert(v):
        if isinstance(v, (list, tuple)):
            return [convert(x) for x in v]
        if isinstance(v, dict):
            return {str(k): convert(x) for k, x in v.items()}
        return v
    return convert(identity)


def stamp_identity(stats: ClassStats, identity: dict) -> ClassStats:
    """Record ``identity`` in ``stats.meta`` (as stored), e.g. for statistics computed ahead of a run."""
    stats.meta = {**stats.meta, IDENTITY_KEY: _plain(identity)}
    return stats


def identity_mismatch(stored: object, wanted: dict) -> list:
    """Keys whose values differ (every wanted key when nothing is stored)."""
    if not isinstance(stored, dict):
        return sorted(wanted)
    return sorted(k for k in set(stored) | set(wanted) if stored.get(k) != wanted.get(k))


def load_or_compute_stats(path: str | os.PathLike, identity: dict, compute: Callable[[], ClassStats],
                          explicit: bool = False, num_classes: int | None = None, feat_dim: int | None = None,
                          save: bool = True, allow_missing: bool = False) -> ClassStats:
    """Statistics for ``identity``: from ``path`` when it was produced by the same thing, else
    ``compute()`` (saved to ``path`` when ``save``; pass False on non-main ranks).

    ``explicit``: the user named ``path``; a missing file or another identity is an error.
    ``compute`` must be called on every rank of a distributed run: every rank reads the
    same file, so they all take the same branch.

    Args:
        path: the statistics file. identity: what the statistics depend on (extractor, weights
            digest, data, transform ...), stored in the file's metadata and compared on reuse.
        compute: ``() -> ClassStats``. explicit: the user named ``path`` (see above).
        num_classes, feat_dim: expected C and D of a reused file (None: not checked).
        save: write computed statistics to ``path``.
        allow_missing: accept a reused file with classes of no sample (``compute`` decides for itself);
            False refuses it, as computed statistics are refused.

    Returns:
        :class:`adarand.ClassStats` with ``meta["identity"]`` set to ``identity``.

    Raises:
        FileNotFoundError / ValueError: ``explicit`` and the file is missing / of another identity;
            a reused file of other C or D, or with classes of no sample (unless ``allow_missing``);
            an unreadable file (naming it).
    """
    identity = _plain(identity)
    if os.path.isfile(path):
        stats = ClassStats.load(path)  # an unreadable file is an error naming it, cache or not
        differ = identity_mismatch(stats.meta.get(IDENTITY_KEY), identity)
        if not differ:
            stats.check_size(path, num_classes, feat_dim)
            missing = (stats.count == 0).nonzero().flatten().tolist()
            if missing and not allow_missing:
                raise ValueError(f"class statistics file {path} has no sample of class(es) {missing} (it was made "
                                 "with missing classes allowed); this run requires every class "
                                 "(ALLOW_MISSING_CLASSES False): allow them, or fix the data and recompute")
            logger.info("class statistics: reusing %s (same extractor, weights and data)", path)
            return stats
        detail = _describe(stats.meta.get(IDENTITY_KEY), identity, differ)
        if explicit:
            raise ValueError(f"class statistics file {path} was produced by another set-up ({detail}); "
                             "recompute it for this run or leave the setting empty to compute them in OUTPUT_DIR")
        logger.warning("class statistics: %s was produced by another set-up (%s): recomputing", path, detail)
    elif explicit:
        raise FileNotFoundError(f"class statistics file not found: {path}")
    else:
        logger.info("class statistics: computing them (cache %s)", path)
    stats = stamp_identity(compute(), identity)
    if save:
        stats.save(path)
        logger.info("class statistics: saved to %s", path)
    return stats


def _describe(stored, wanted, keys, limit=4) -> str:
    if not isinstance(stored, dict):
        return "the file records no identity"
    parts = [f"{k}: file {stored.get(k)!r} vs run {wanted.get(k)!r}" for k in keys[:limit]]
    return "; ".join(parts) + (f"; and {len(keys) - limit} more" if len(keys) > limit else "")
