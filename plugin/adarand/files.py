"""Reading and writing the project's files so that nothing executes and nothing is lost.

- :func:`load_torch`: ``torch.load(weights_only=True)``; a file holding anything but
  tensors and plain types is refused, a truncated or corrupt one is an error naming it.
- :func:`atomic_write` (and :func:`save_torch`, :func:`write_json`): a uniquely named
  temporary file in the target's directory, flushed and fsync'ed, then ``os.replace``'d
  over the target; removed on any failure, so a crash or a full disk never leaves half a
  file or a stray ``.tmp``.
- :func:`append_line`: one line appended under an exclusive ``flock`` (never interleaved).

The foundation every part writes and reads through (the class statistics included); one run per
output directory is :mod:`adarand.runs.output_dir`.
"""
import contextlib
import fcntl
import json
import os
import pickle
import re
import tempfile
import zipfile
from collections.abc import Iterable, Iterator
from typing import IO, Any

import torch

TEMP_NAME = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp")  # atomic_write's: "." + name + "." + mkstemp's 8 characters + ".tmp"
StrPath = str | os.PathLike[str]  # what the functions below take as a path


class UnsafeFileError(ValueError):
    """A file holds objects that ``torch.load(weights_only=True)`` refuses to build."""


def load_torch(path: StrPath, what: str = "file", map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` with errors that name ``path`` (``what`` says what it is)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        unsupported = [line.strip() for line in str(err).splitlines() if "unsupported global" in line.lower()]
        if unsupported:
            raise UnsafeFileError(
                f"refusing to load {what} {path}: it holds objects other than tensors and plain Python "
                f"types, which could execute code when unpickled (loaded with weights_only=True; "
                f"{unsupported[0].split(' was not')[0].replace('WeightsUnpickler error: ', '')})") from None
        raise ValueError(f"cannot read {what} {path}: truncated or corrupt (not a torch file: "
                         f"{str(err).strip().splitlines()[-3:][0]})") from None
    except (EOFError, RuntimeError, OSError, zipfile.BadZipFile, ValueError, KeyError, AttributeError,
            IndexError, TypeError) as err:
        raise ValueError(f"cannot read {what} {path}: truncated or corrupt ({type(err).__name__}: {err})") from None


class _AllowListUnpickler(pickle.Unpickler):
    def __init__(self, f, allowed, **kwargs):
        super().__init__(f, **kwargs)
        self.allowed = allowed

    def find_class(self, module, name):
        if (module, name) not in self.allowed:
            raise UnsafeFileError(f"it references {module}.{name}")
        return super().find_class(module, name)


def load_pickle(path: StrPath, what: str = "file", allowed: Iterable[tuple[str, str]] = (),
                encoding: str = "latin1") -> Any:
    """Unpickle ``path`` allowing only the ``(module, name)`` globals in ``allowed`` (plain
    containers, numbers and strings need none), so a payload cannot run."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        with open(path, "rb") as f:
            return _AllowListUnpickler(f, set(allowed), encoding=encoding).load()
    except UnsafeFileError as err:
        raise UnsafeFileError(f"refusing to load {what} {path}: {err}, which is not allowed in it "
                              "(unpickling it could execute code)") from None
    except (pickle.UnpicklingError, EOFError, OSError, ValueError, KeyError, IndexError, TypeError,
            AttributeError) as err:
        raise ValueError(f"cannot read {what} {path}: truncated or corrupt ({type(err).__name__}: {err})") from None


def _umask():
    """The process's umask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_write(path: StrPath, mode: str = "wb") -> Iterator[IO[Any]]:
    """Yield a file object whose content replaces ``path`` only when the block completes.

    The temporary file is ``.<name>.<random>.tmp`` beside ``path`` (two writers never share
    one), with the permissions the umask gives a new file; it is flushed and fsync'ed before the
    rename and deleted on failure. A failure is re-raised naming ``path``.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 -> what open() would give, as Detectron2's files
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(err, OSError) and err.errno is not None:
            raise OSError(err.errno, f"could not write {path}: {err.strerror or err}") from err
        if isinstance(err, RuntimeError):  # torch.save reports a full disk as a RuntimeError
            raise RuntimeError(f"could not write {path}: {err}") from err
        raise


def save_torch(obj: Any, path: StrPath) -> None:
    """``torch.save`` through :func:`atomic_write`."""
    with atomic_write(path, "wb") as f:
        torch.save(obj, f)


def write_json(path: StrPath, obj: Any) -> None:
    """JSON (indented) through :func:`atomic_write`."""
    with atomic_write(path, "w") as f:
        json.dump(obj, f, indent=2)


def write_text(path: StrPath, text: str) -> None:
    with atomic_write(path, "w") as f:
        f.write(text)


def save_figure(fig: Any, path: str, **options: Any) -> None:
    """A matplotlib figure through :func:`atomic_write` (format from the extension)."""
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format=os.path.splitext(path)[1].lstrip(".") or "png", **options)


def save_image(image: Any, path: str, **options: Any) -> None:
    """A PIL image through :func:`atomic_write` (format from the extension)."""
    from PIL import Image

    extension = os.path.splitext(path)[1].lower()
    if extension not in Image.registered_extensions():
        raise ValueError(f"cannot write {path}: no image format for the extension {extension!r}")
    with atomic_write(path, "wb") as f:
        image.save(f, format=Image.registered_extensions()[extension], **options)


def append_line(path: StrPath, line: str) -> None:
    """Append ``line`` + newline under an exclusive lock, flushed to disk."""
    with open(path, "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            f.write(line.rstrip("\n") + "\n")
            f.flush()
            os.fsync(f.fileno())
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
