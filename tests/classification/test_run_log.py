"""metrics.jsonl and TensorBoard names: the regularizer's values under the one logging vocabulary
(docs/logging.md), and run directories written before it read with today's names."""
import json
from unittest import mock

from adarand.classification.run_log import RunLog, read_metrics


def test_metrics_written_before_the_vocabulary_read_with_todays_names(tmp_path):
    old = {"epoch": 1, "train_loss": 1.5, "train_reg": 0.25, "reg_skipped_batches": 0, "val_top1": 0.5}
    (tmp_path / "metrics.jsonl").write_text(json.dumps(old) + "\n")
    assert read_metrics(tmp_path) == [{"epoch": 1, "train_loss": 1.5, "adarand/loss": 0.25,
                                       "adarand/skipped_batches": 0, "val_top1": 0.5}]


def test_tensorboard_keeps_the_adarand_names_and_groups_the_others_by_their_prefix(tmp_path):
    log = RunLog(str(tmp_path))
    log.writer = mock.Mock()
    log.log({"epoch": 1, "train_loss": 1.5, "adarand/loss": 0.25, "adarand/prior_loss": 0.75,
             "adarand/skipped_batches": 0})
    tags = [call.args[0] for call in log.writer.add_scalar.call_args_list]
    assert tags == ["train/loss", "adarand/loss", "adarand/prior_loss", "adarand/skipped_batches"]
    assert read_metrics(tmp_path)[0]["adarand/prior_loss"] == 0.75
