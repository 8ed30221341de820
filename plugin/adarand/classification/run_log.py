"""Per-epoch records: ``metrics.jsonl`` (one JSON object a line) and TensorBoard scalars."""
import json
import os


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
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in self.history)
        os.replace(tmp, self.path)
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is optional: metrics.jsonl holds the same numbers
            return
        self.writer = SummaryWriter(os.path.join(output_dir, "tensorboard"), purge_step=len(self.history) + 1)

    def log(self, record: dict) -> None:
        self.history.append(record)
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for key, value in record.items():
                if key != "epoch" and isinstance(value, (int, float)):
                    self.writer.add_scalar(key.replace("_", "/", 1), value, record["epoch"])
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def write_json(path, obj) -> None:
    """Atomic JSON write."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
    os.replace(tmp, path)


def read_jsonl(path) -> list:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]
