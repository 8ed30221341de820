"""A TorchDispatchMode that records the ops which would stall a CUDA stream for the host.

On CUDA these ops wait for the device to finish before the host can go on: reading a
value back (``.item()``, ``float()``, ``bool()``/``if tensor``, ``.tolist()``,
``.numpy()``, ``.cpu()``), ops whose output size depends on the data (``nonzero``,
boolean-mask indexing and index_put, ``masked_select``, ``unique``, ``bincount``,
``repeat_interleave`` without ``output_size``), ``torch.equal``, and tensors built from
host values (``torch.tensor(x)`` / ``new_tensor(x)``: a host-to-device copy every step).
On the CPU nothing stalls, but the same ops are dispatched, so running the step on CPU
tensors under this mode finds every one of them.

Each record is attributed to the innermost Python frame outside torch (and outside this
file): the line that issued the op. ``ours()`` keeps the records issued from the
``adarand`` package; Detectron2's or torchvision's own syncs are not ours.
"""
import os
import sys

import torch
from torch.utils._python_dispatch import TorchDispatchMode

import adarand

PACKAGE_DIR = os.path.dirname(os.path.realpath(adarand.__file__)) + os.sep
_TORCH_DIR = os.path.dirname(os.path.realpath(torch.__file__)) + os.sep
_SKIP = (_TORCH_DIR, os.path.realpath(__file__), os.path.dirname(os.path.realpath(__import__("contextlib").__file__))
         + os.sep + "contextlib.py")

aten = torch.ops.aten
_ALWAYS = {
    aten._local_scalar_dense.default: "reads a value back (.item()/float()/int()/bool())",
    aten.is_nonzero.default: "reads a value back (bool())",
    aten.equal.default: "torch.equal reads the comparison back",
    aten.nonzero.default: "nonzero: output size depends on the data",
    aten.argwhere.default: "argwhere: output size depends on the data",
    aten.masked_select.default: "masked_select: output size depends on the data",
    aten.bincount.default: "bincount: output size depends on the data",
    aten._unique.default: "unique: output size depends on the data",
    aten._unique2.default: "unique: output size depends on the data",
    aten.unique_dim.default: "unique: output size depends on the data",
    aten.unique_consecutive.default: "unique_consecutive: output size depends on the data",
    aten.lift_fresh.default: "tensor from host values (torch.tensor/new_tensor: a host-to-device copy)",
}


def _has_bool_index(indices):
    return any(i is not None and i.dtype in (torch.bool, torch.uint8) for i in indices)


def sync_reason(func, args, kwargs):
    """Why ``func(*args, **kwargs)`` would synchronize a CUDA stream with the host, or None."""
    if func in _ALWAYS:
        return _ALWAYS[func]
    packet = func.overloadpacket
    if packet in (aten.index, aten._unsafe_index) and _has_bool_index(args[1]):
        return "boolean-mask indexing: output size depends on the data"
    if packet in (aten.index_put, aten.index_put_, aten._index_put_impl_) and _has_bool_index(args[1]):
        return "boolean-mask index_put: nonzero of the mask"
    if packet is aten.repeat_interleave and func is not aten.repeat_interleave.self_int \
            and kwargs.get("output_size") is None:
        return "repeat_interleave without output_size"
    return None


def _issuer():
    """(file, line, function) of the innermost frame outside torch and this module."""
    frame = sys._getframe(1)
    while frame is not None:
        path = os.path.realpath(frame.f_code.co_filename)
        if not path.startswith(_SKIP) and not path.startswith("<"):
            return path, frame.f_lineno, frame.f_code.co_name
        frame = frame.f_back
    return "?", 0, "?"


class SyncAudit(TorchDispatchMode):
    """Records every syncing op as (reason, op name, file, line, function)."""

    _READ_BACKS = ("tolist", "numpy", "cpu")  # not dispatched as aten ops on CPU tensors

    def __init__(self):
        super().__init__()
        self.records = []
        self._saved = {}

    def _record(self, reason, name):
        path, line, function = _issuer()
        self.records.append((reason, name, path, line, function))

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        reason = sync_reason(func, args, kwargs)
        if reason is not None:
            self._record(reason, str(func))
        return func(*args, **kwargs)

    def __enter__(self):
        audit = self
        for name in self._READ_BACKS:
            original = getattr(torch.Tensor, name)
            self._saved[name] = original

            def wrapper(tensor, *args, _original=original, _name=name, **kwargs):
                audit._record(f"copies device data to the host (.{_name}())", f"Tensor.{_name}")
                return _original(tensor, *args, **kwargs)

            setattr(torch.Tensor, name, wrapper)
        return super().__enter__()

    def __exit__(self, *exc):
        for name, original in self._saved.items():
            setattr(torch.Tensor, name, original)
        self._saved = {}
        return super().__exit__(*exc)

    def ours(self):
        return [r for r in self.records if r[2].startswith(PACKAGE_DIR)]

    def report(self, records=None):
        records = self.ours() if records is None else records
        return "\n".join(f"{os.path.relpath(path, os.path.dirname(PACKAGE_DIR))}:{line} in {function}: "
                         f"{name}: {reason}" for reason, name, path, line, function in records)

    def assert_none_ours(self):
        ours = self.ours()
        assert not ours, f"{len(ours)} host sync(s) issued by adarand on the step path:\n{self.report(ours)}"


def values_unchecked(module):
    """Turn value checks off on every submodule that has them (their default for CUDA tensors)."""
    for sub in module.modules():
        if hasattr(sub, "check_values"):
            sub.check_values = False
    return module
