"""Seeds of a run's random streams, derived from the run's seed without aliasing.

``seed + epoch`` or ``seed + rank`` alias: (seed k, epoch e) and (seed k + 1, epoch e - 1) give the same
stream. :func:`stream_seed` instead hashes the whole key tuple (a SplitMix64 chain, pure Python):
for one key position varied it is a bijection of 64-bit values, and two different tuples meet only by
a 2^-63 chance. The first key names the stream, so the data order, the augmentation, the loader's
workers and the regularizer's noise of one run are unrelated streams.
"""
import torch

DATA_ORDER, AUGMENTATION, LOADER, NOISE = range(4)  # stream names (the first key of stream_seed)

_MASK64 = (1 << 64) - 1


def _splitmix64(value: int) -> int:
    """SplitMix64's finaliser: a bijection of 64-bit integers with full avalanche."""
    value = (value + 0x9E3779B97F4A7C15) & _MASK64
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK64
    return value ^ (value >> 31)


def stream_seed(*keys: int) -> int:
    """A seed in [0, 2^63) for the stream named by ``keys``, e.g. ``(DATA_ORDER, SEED, epoch)``.

    ``h_0 = 0``, ``h_{k+1} = splitmix64(h_k xor key_k)``; negative keys are taken modulo 2^64.

    Args:
        *keys: integers; the first names the stream (:data:`DATA_ORDER`, :data:`NOISE`, ...).

    Returns:
        int in [0, 2^63) (a valid seed for ``torch.Generator.manual_seed``, Python's and NumPy's RNGs).
    """
    value = 0
    for key in keys:
        value = _splitmix64(value ^ (int(key) & _MASK64))
    return value >> 1


def seeded_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with ``seed``.

    Args:
        seed: e.g. a :func:`stream_seed`. device: where the draws happen (a generator serves one device type).

    Returns:
        ``torch.Generator``.
    """
    return torch.Generator(device=device).manual_seed(seed)
