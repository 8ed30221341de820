"""What every regularized branch of a Detectron2 head shares (the box branches of the ROI heads, the
dense branch of a semantic-segmentation head): its regularizer, its name and its own noise stream
(:class:`Branch`), and the error that says how to initialise a prior that has no statistics."""
import torch
from torch import nn

from adarand.seeding import NoiseStream, name_keys

UNINITIALISED = (
    "the AdaRand prior of {where} is not initialised (the loaded weights hold no prior): compute the "
    "pre-trained head's statistics with tools/compute_prior.py and pass them as MODEL.ADARAND.STATS_FILE, "
    "train with adarand.detection.AdaRandDetectionTrainer / tools/train_net.py / tools/lazyconfig_train_net.py "
    "(they initialise it), or call adarand.detection.init_prior(cfg, model) after loading the weights"
)
RESUMED_UNINITIALISED = (
    "the AdaRand prior of {where} is not initialised: the checkpoint {path} that --resume continues holds "
    "no prior (written by a run without AdaRand?). A resumed run keeps its checkpoint's prior and reads no "
    "statistics (MODEL.ADARAND.STATS_FILE is not used); to start AdaRand from these weights, run without "
    "--resume in a new OUTPUT_DIR with MODEL.WEIGHTS {path}"
)


def check_prior_initialised(regularizer: nn.Module, where: str, resumed_from: str | None = None) -> None:
    """Raise the error saying how to initialise ``regularizer``'s prior when it needs statistics and has none
    (``where``: the branch, for the message; ``resumed_from``: the checkpoint a resume loaded)."""
    prior = getattr(regularizer, "prior", None)
    if regularizer.needs_stats and prior is not None and not prior.initialized:
        message = RESUMED_UNINITIALISED if resumed_from else UNINITIALISED
        raise RuntimeError(message.format(where=where, path=resumed_from))


class Branch(nn.Module):
    """A regularization of a Detectron2 head (the box and dense branches): its ``regularizer`` and ``name``, and the
    regularizer's own noise stream (:class:`adarand.seeding.NoiseStream`, keyed by the name), from which the
    method's noise and a dense head's pixel draw come, so they never shift torch's global RNG (the ROI sampler,
    dropout) away from a run without AdaRand; its seed and state are in the model's checkpoints
    (``<prefix>noise_seed``, ``noise_state``), so ``--resume`` continues it.

    Args:
        regularizer: an ``adarand.Regularizer``. name: the branch's name (see the subclasses).
        seed: the run's seed (:func:`adarand.seeding.run_seed` of SEED; default ``torch.initial_seed()``).
    """

    def __init__(self, regularizer: nn.Module, name: str, seed: int | None = None):
        super().__init__()
        self.regularizer, self.name = regularizer, name
        self.noise_stream = NoiseStream(regularizer, seed, name_keys(name))

    def noise_generator(self, device: torch.device) -> torch.Generator | None:
        """The branch's generator on ``device`` (made at the first draw); its regularizer draws from it."""
        return self.noise_stream.generator(device)

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        self.noise_stream.save(destination, prefix)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        self.noise_stream.load(state_dict, prefix)  # (no keys in checkpoints from before the noise had its stream)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
