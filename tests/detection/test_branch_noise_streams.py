"""Each Detectron2 regularization branch draws its noise and its pixels from its own generator: an AdaRand run
leaves torch's global RNG (the ROI sampler, dropout) as its fine-tuning partner does; a resumed run continues
the stream."""
import io

import torch
from detectron2.modeling import build_backbone, build_model, build_sem_seg_head
from detectron2.utils.events import EventStorage
from tiny import SIZE, panoptic_cfg, tiny_batch, tiny_cfg, tiny_sem_seg_cfg

from adarand.detection import regularizations
from adarand.seeding import NOISE, name_keys, run_seed, stream_seed


def _initialised(model):
    for branch in regularizations(model):
        reg = branch.regularizer
        if reg.needs_stats:
            mu = torch.randn(reg.num_classes, reg.feat_dim, generator=torch.Generator().manual_seed(3))
            reg.prior.init_from_stats(mu, torch.ones_like(mu))
    return model


def _sem_seg_head(tmp_path, method="adarand", weights=None):
    cfg = tiny_sem_seg_cfg(tmp_path, **{"MODEL.ADARAND.METHOD": method})
    head = build_sem_seg_head(cfg, build_backbone(cfg).output_shape())
    if weights is not None:
        head.load_state_dict(weights, strict=False)
    return _initialised(head).train()


def _sem_seg_inputs(head):
    g = torch.Generator().manual_seed(1)
    features = {k: torch.randn(2, 32, SIZE[0] // s, SIZE[1] // s, generator=g)
                for k, s in zip(head.in_features, (4, 8, 16, 32))}
    return features, torch.randint(0, 21, (2,) + SIZE, generator=g)


def test_the_sem_seg_head_leaves_the_global_rng_as_fine_tuning_does(tmp_path):
    ft = _sem_seg_head(tmp_path, "none")
    ours = _sem_seg_head(tmp_path, "adarand", ft.state_dict())
    inputs = _sem_seg_inputs(ft)
    states = []
    for head in (ft, ours):
        torch.manual_seed(5)
        _, losses = head(*inputs)
        states.append(torch.get_rng_state())
        head.take_sampled_rows()
    assert losses["loss_adarand_sem_seg"] > 0  # the pixels were drawn and the noise too, from the branch's stream
    assert torch.equal(*states)


def test_the_roi_sampler_picks_the_same_proposals_with_and_without_adarand(tmp_path):
    models = []
    for method in ("none", "adarand"):
        cfg = tiny_cfg(tmp_path, **{"MODEL.MASK_ON": False, "MODEL.ROI_HEADS.NUM_CLASSES": 3,
                                    "MODEL.ADARAND.METHOD": method})
        torch.manual_seed(0)
        models.append(_initialised(build_model(cfg)).train())
    ft, ours = models
    ours.load_state_dict(ft.state_dict(), strict=False)
    batch = [{k: v for k, v in d.items() if k != "sem_seg"} for d in tiny_batch()]
    runs = []
    for model in (ft, ours):
        torch.manual_seed(5)
        losses = []
        for _ in range(2):  # the second step's ROIs are sampled after the first step's AdaRand draws
            with EventStorage():
                losses.append(model(batch))
            model.roi_heads.take_sampled_rows()
        runs.append((losses, torch.get_rng_state()))
    (ft_losses, ft_state), (our_losses, our_state) = runs
    assert our_losses[1]["loss_adarand"] > 0
    assert torch.equal(ft_state, our_state)
    for ft_step, our_step in zip(ft_losses, our_losses):
        assert all(torch.equal(ft_step[k], our_step[k]) for k in ft_step if not k.startswith("loss_adarand"))


def test_each_branch_has_its_own_stream_seeded_from_the_run_seed(tmp_path):
    torch.manual_seed(0)
    model = _initialised(build_model(panoptic_cfg(tmp_path, SEED=11))).train()
    with EventStorage():
        model(tiny_batch())
    box, dense = regularizations(model)
    for branch in (box, dense):
        generator = branch.regularizer.noise_generator
        assert generator.initial_seed() == stream_seed(NOISE, 11, 0, *name_keys(branch.name))
    assert box.regularizer.noise_generator is not dense.regularizer.noise_generator
    state = model.state_dict()
    for prefix in ("roi_heads.adarand.0.", "sem_seg_head.adarand."):
        assert int(state[prefix + "noise_seed"]) == 11 and prefix + "noise_state" in state
    torch.manual_seed(1234)
    assert run_seed(-1) == 1234 and run_seed(7) == 7  # SEED -1: the seed Detectron2's default_setup gave torch


def _checkpoint(head, drop_stream=False):
    state = {k: v for k, v in head.state_dict().items() if not (drop_stream and k.split(".")[-1].startswith("noise_"))}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def _draw(head, inputs, global_seed):
    torch.manual_seed(global_seed)  # the global RNG plays no part in the draw
    _, losses = head(*inputs)
    ((rows, labels),) = head.take_sampled_rows().values()
    return rows, labels, losses["loss_adarand_sem_seg"]


def test_a_resumed_run_draws_what_an_uninterrupted_run_draws(tmp_path):
    run = _sem_seg_head(tmp_path)
    inputs = _sem_seg_inputs(run)
    first = _draw(run, inputs, 5)
    checkpoint = _checkpoint(run)
    second = _draw(run, inputs, 5)
    resumed = _sem_seg_head(tmp_path)
    resumed.load_state_dict(checkpoint)
    assert all(torch.equal(a, b) for a, b in zip(_draw(resumed, inputs, 99), second))
    assert not torch.equal(first[0], second[0])  # the stream moved on: the resumed run did not restart it

    old = _sem_seg_head(tmp_path)  # a checkpoint from before the streams: loads, and the stream starts from its seed
    old.load_state_dict(_checkpoint(run, drop_stream=True))
    assert all(torch.equal(a, b) for a, b in zip(_draw(old, inputs, 99), first))
