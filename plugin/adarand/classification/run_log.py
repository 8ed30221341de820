"""Per-epoch records: ``metrics.jsonl`` (one JSON object a line) and TensorBoard scalars."""
import json
import os

from adarand.files import append_line, write_text


class RunLog:
    """Writes on rank 0 only. ``history`` (the records of earlier epochs, from a checkpoint)
    replaces whatever ``metrics.jsonl`` holds, so a resumed run has no duplicate epochs."""

    def __init__(self, output_dir, history=(), enabled=True):
        self.path = os.path.join(output_dir, "metrics.jsonl")
        self.history = list(history)
        self.enabled = enabled
        self.writer = None
        if not enabled:
            return
        write_text(self.path, "".join(json.dumps(r) + "\n" for r in self.history))
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is optional: metrics.jsonl holds the same numbers
            return
        self.writer = SummaryWriter(os.path.join(output_dir, "tensorboard"), purge_step=len(self.history) + 1)

    def log(self, record: dict) -> None:
        self.history.append(record)
        if not self.enabled:
            return
        append_line(self.path, json.dumps(record))
        if self.writer is not None:
            for key, value in record.items():
                if key != "epoch" and isinstance(value, (int, float)):
                    self.writer.add_scalar(key.replace("_", "/", 1), value, record["epoch"])
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def read_jsonl(path) -> list:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]
