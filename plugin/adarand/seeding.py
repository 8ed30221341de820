"""Seeds of a run's random streams, derived from the run's seed without aliasing.

``seed + epoch`` or ``seed + rank`` alias: (seed k, epoch e) and (seed k + 1, epoch e - 1) give the same
stream. :func:`stream_seed` instead hashes the whole key tuple (a SplitMix64 chain, pure Python):
for one key position varied it is a bijection of 64-bit values, and two different tuples meet only by
a 2^-63 chance. The first key names the stream, so the data order, the augmentation, the loader's
workers and the regularizer's noise of one run are unrelated streams.
"""
import torch

from .distributed import rank

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


def run_seed(seed: int) -> int:
    """The seed a run uses: ``seed``, or for a negative one (Detectron2's SEED -1: a random seed) the seed torch's
    global generator was last seeded with (``torch.initial_seed()``: what Detectron2's ``default_setup`` drew)."""
    return int(seed) if int(seed) >= 0 else torch.initial_seed()


def name_keys(name: str) -> tuple[int, ...]:
    """Keys naming a stream by text (a regularization branch): its UTF-8 length, then its bytes (prefix-free, so two
    names never give the same keys)."""
    data = name.encode()
    return (len(data), *data)


class NoiseStream:
    """A regularizer's own noise stream: ``regularizer.noise_generator``, seeded with
    ``stream_seed(NOISE, seed, rank, *keys)``, made on the device of the first draw, checkpointed by its owner.

    The owner (a module) calls :meth:`generator` before each draw, :meth:`save` from its ``_save_to_state_dict``
    (``noise_seed``, and ``noise_state`` once drawn) and :meth:`load` from its ``_load_from_state_dict``, so a
    resumed run continues the stream exactly; a state dict without these keys (written before the noise had its
    stream) loads and keeps the stream's own seed.

    Args:
        regularizer: the ``adarand.Regularizer`` whose ``noise_generator`` this stream sets.
        seed: the run's seed (default ``torch.initial_seed()``). keys: further ints naming the stream.
    """

    def __init__(self, regularizer: torch.nn.Module, seed: int | None = None, keys: tuple[int, ...] = ()):
        self.regularizer = regularizer
        self.seed = torch.initial_seed() if seed is None else int(seed)
        self.keys = tuple(keys)
        self._state = None  # a loaded generator state, applied when the generator is made

    def generator(self, device: torch.device) -> "torch.Generator | None":
        """The generator on ``device``: made (seeded, or from a loaded state) when missing or elsewhere; None on
        the meta device (shapes only, no numbers)."""
        if device.type == "meta":
            self.regularizer.noise_generator = None
            return None
        generator = self.regularizer.noise_generator
        if generator is None or generator.device.type != device.type:
            generator = seeded_generator(stream_seed(NOISE, self.seed, rank(), *self.keys), device)
            if self._state is not None and generator.get_state().shape == self._state.shape:
                generator.set_state(self._state)
            self._state = None
            self.regularizer.noise_generator = generator
        return generator

    def save(self, destination: dict, prefix: str) -> None:
        """Put ``noise_seed`` and the generator's state (``noise_state``, when there is one) into ``destination``."""
        generator = self.regularizer.noise_generator
        destination[prefix + "noise_seed"] = torch.tensor(self.seed, dtype=torch.int64)
        state = generator.get_state() if generator is not None else self._state
        if state is not None:
            destination[prefix + "noise_state"] = state

    def load(self, state_dict: dict, prefix: str) -> None:
        """Take ``noise_seed`` / ``noise_state`` out of ``state_dict`` (when present): the generator is made again
        from them at the next draw."""
        if prefix + "noise_seed" in state_dict:
            self.seed = int(state_dict.pop(prefix + "noise_seed"))
            self._state = state_dict.pop(prefix + "noise_state", None)
            self.regularizer.noise_generator = None
