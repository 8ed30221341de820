"""One run per output directory, and what a killed run left there.

- :func:`claim_output_dir`: refuses another run's checkpoint unless resuming; ``OUTPUT_DIR/.lock``
  keeps a second process out; it removes the temporary files a writer killed mid-save left there
  (:func:`remove_stale_temp_files`).
- :func:`move_aside` keeps a directory that is to be rerun under a new name.
"""
import contextlib
import fcntl
import logging
import os
from collections.abc import Iterable
from typing import Any

from ..files import TEMP_NAME, StrPath

LOCK_NAME = ".lock"
logger = logging.getLogger(__name__)
_held_locks: dict[str, Any] = {}  # absolute output dir -> open lock file, kept for the life of the process


class OutputDirInUse(RuntimeError):
    """Another process holds ``OUTPUT_DIR/.lock``, or the directory holds another run."""


def lock_output_dir(output_dir: str) -> None:
    """Take ``output_dir/.lock`` (``flock``, exclusive, non-blocking) for the rest of this process.

    The kernel drops the lock when the last process sharing it exits, however it exits, so a crashed run
    never leaves a stale lock; the file records the taker's pid, named when the lock is refused (a
    taker no longer running means a process it started still holds it). Taking it twice in one process
    is a no-op.
    """
    key = os.path.abspath(output_dir)
    if key in _held_locks:
        return
    os.makedirs(key, exist_ok=True)
    f = open(os.path.join(key, LOCK_NAME), "a+")
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip()
        f.close()
        raise OutputDirInUse(_lock_refusal(output_dir, holder)) from None
    f.seek(0)
    f.truncate()
    f.write(f"{os.getpid()}\n")
    f.flush()
    _held_locks[key] = f


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _lock_refusal(output_dir, holder: str) -> str:
    """Why ``output_dir``'s lock is held: by the process whose pid the lock file records, or, when that
    process has ended, by one it started that shares the lock (a forked data-loader worker, a child)."""
    lock = os.path.join(output_dir, LOCK_NAME)
    if holder.isdigit() and not _alive(int(holder)):
        return (f"OUTPUT_DIR {output_dir} is locked by a process left behind by pid {holder}, which took "
                f"{lock} and is no longer running: a process it started (a data-loader worker, a child) still "
                f"holds the lock; end it (`fuser -v {lock}` lists it) or choose a new OUTPUT_DIR")
    who = f"pid {holder}" if holder.isdigit() else "another process"
    return (f"OUTPUT_DIR {output_dir} is in use by another process ({who} holds {lock}); wait for it to "
            "finish or choose a new OUTPUT_DIR")


def release_output_dir(output_dir: str) -> None:
    """Give the lock back before the process ends (tests, several runs in one process)."""
    f = _held_locks.pop(os.path.abspath(output_dir), None)
    if f is not None:
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)
        f.close()


def claim_output_dir(output_dir: str, resume: bool, checkpoint_names: Iterable[str]) -> None:
    """Lock ``output_dir`` and, unless ``resume``, refuse it when it holds one of ``checkpoint_names``; then remove
    the temporary files an interrupted save left there (:func:`remove_stale_temp_files`)."""
    lock_output_dir(output_dir)
    if not resume:
        found = [n for n in checkpoint_names if os.path.exists(os.path.join(output_dir, n))]
        if found:
            release_output_dir(output_dir)
            raise OutputDirInUse(f"OUTPUT_DIR {output_dir} already holds a run ({', '.join(found)}): pass --resume "
                                 "to continue it, or choose a new OUTPUT_DIR for a new run")
    removed = remove_stale_temp_files(output_dir)
    if removed:
        logger.warning("removed %d temporary file(s) an interrupted save left in %s: %s", len(removed), output_dir,
                       ", ".join(removed))


def remove_stale_temp_files(directory: StrPath) -> list[str]:
    """Delete the temporary files of :func:`atomic_write` in ``directory`` (not below it): a writer killed
    mid-save leaves one. Only regular files named as :func:`atomic_write` names them; call it only while
    holding the directory's lock (:func:`lock_output_dir`), when no writer of this run is alive.

    Returns:
        the removed names, sorted.
    """
    removed = []
    for entry in os.scandir(directory):
        if TEMP_NAME.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
                removed.append(entry.name)
    return sorted(removed)


def move_aside(path: str) -> str:
    """Rename the directory ``path`` to ``<path>.old<k>`` (the first free k); returns the new name."""
    k = 1
    while os.path.exists(f"{path}.old{k}"):
        k += 1
    os.replace(path, f"{path}.old{k}")
    return f"{path}.old{k}"
