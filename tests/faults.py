"""Faults shared by the bad-input tests: a pickled payload, a second process holding a lock, a writer killed
mid-save."""
import os
import signal
import subprocess
import sys

import torch


class Payload:
    """Unpickling this runs ``open(marker, "w")``: the file appears iff code executed."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def write_payload_checkpoint(path, marker):
    torch.save({"model": {"w": torch.ones(2)}, "extra": Payload(marker)}, path)


HOLDER = """
import sys
from adarand.runs.output_dir import lock_output_dir
lock_output_dir(sys.argv[1])
print("locked", flush=True)
sys.stdin.read()  # hold until the test closes stdin
"""


def hold_lock(directory):
    """A second process holding ``directory``'s lock until its stdin is closed."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(directory)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


LEFT_BEHIND = """
import os, sys
from adarand.runs.output_dir import lock_output_dir
lock_output_dir(sys.argv[1])
if os.fork() == 0:  # the child shares the lock, as a forked data-loader worker does
    sys.stdin.read()  # hold until the test closes stdin
    os._exit(0)
print(os.getpid(), flush=True)
os._exit(0)
"""


def lock_left_behind(directory):
    """A process that takes ``directory``'s lock and exits, leaving a forked child holding it until the returned
    pipe is closed: returns (the exited taker's pid, the child's stdin)."""
    proc = subprocess.Popen([sys.executable, "-c", LEFT_BEHIND, str(directory)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    pid = int(proc.stdout.readline())
    assert proc.wait(timeout=60) == 0
    return pid, proc.stdin


KILLED_WRITER = """
import os, signal, sys
from adarand.files import atomic_write
with atomic_write(sys.argv[1]) as f:
    f.write(b"partial checkpoint")
    f.flush()
    os.kill(os.getpid(), signal.SIGKILL)
"""


def killed_during_save(path):
    """A process killed while :func:`adarand.files.atomic_write` writes ``path``: returns the temporary file's name
    it left beside ``path``."""
    before = set(os.listdir(os.path.dirname(path)))
    proc = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(path)], timeout=120)
    assert proc.returncode == -signal.SIGKILL
    (left,) = set(os.listdir(os.path.dirname(path))) - before
    return left
