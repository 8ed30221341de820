"""adarand_projects.bench.launch_count (tools/bench/count_launches.py): the fused loss is two kernels forward (the
loss and its reduction, bad labels counted) and one backward, the EMA two (the finiteness guard included), the prior
update three plus its two matmuls (and the skip counter's two ops)."""
import os

import pytest

from adarand_projects.bench import launch_count


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1", reason="counts the interpreter's launches")
def test_launch_counts_per_phase():
    fused = launch_count.count("triton", batch=9, classes=5, dim=12)
    eager = launch_count.count("torch", batch=9, classes=5, dim=12)
    assert fused["loss forward"]["kernels"] == {"_target_loss_fwd_kernel": 1, "_target_loss_finish_kernel": 1}
    assert fused["loss forward"]["aten"] <= 3  # the seed, lambda times the loss, the bad-label counter
    assert fused["loss backward"]["kernels"] == {"_target_loss_bwd_kernel": 1}
    assert fused["EMA"]["kernels"] == {"_class_sums_kernel": 1, "_ema_apply_kernel": 1}
    assert fused["EMA"]["aten"] == 0
    assert fused["prior update"]["kernels"] == {"_prior_rows_kernel": 1, "_prior_adam_kernel": 1,
                                                "_prior_finish_kernel": 1}
    assert fused["prior update"]["aten"] <= 4  # the 2 matmuls, skipped_batches += !applied
    assert all(phase["triton"] == 0 for phase in eager.values())
    assert fused["loss forward"]["aten"] < eager["loss forward"]["aten"]
    # 137 before the prior update lost autograd, 66 before issue 21's last pass
    assert launch_count.training_step_total(fused) <= 17


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1", reason="counts the interpreter's launches")
def test_ema_over_row_blocks_adds_one_launch(monkeypatch):
    """A batch cut into row blocks (a segmentation batch; here 70 rows under lowered thresholds): the class sums
    take their finishing kernel, which writes the flags, so the guard still costs no launch and no torch op."""
    import adarand.ops.class_ema_triton as class_ema_triton

    monkeypatch.setattr(class_ema_triton, "SINGLE_BLOCK_ROWS", 32)
    monkeypatch.setattr(class_ema_triton, "ROWS_PER_BLOCK", 32)
    fused = launch_count.count("triton", batch=70, classes=5, dim=12)
    assert fused["EMA"]["kernels"] == {"_class_sums_kernel": 1, "_class_sums_finish_kernel": 1,
                                       "_ema_apply_kernel": 1}
    assert fused["EMA"]["aten"] == 0
