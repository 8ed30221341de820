"""Safe loading, atomic writes, locked appends, one run per directory, the guarded statistics
cache and the divergence guard (issue 10, items 1-4 and 9), at the library level."""
import errno
import json
import logging
import math
import os
import pickle
import threading

import pytest
import torch

import adarand
from adarand import files
from adarand.runs import output_dir
from adarand.runs.finite_guard import FiniteGuard, check_finite_weights
from adarand.runs.stats_cache import load_or_compute_stats, state_dict_digest

from faults import Payload, hold_lock, killed_during_save, lock_left_behind, write_payload_checkpoint


def test_payload_is_refused_and_never_runs(tmp_path):
    path, marker = tmp_path / "last.pth", tmp_path / "marker"
    write_payload_checkpoint(path, marker)
    with pytest.raises(files.UnsafeFileError, match="last.pth"):
        files.load_torch(path, what="checkpoint")
    assert not marker.exists()
    with open(tmp_path / "w.pkl", "wb") as f:
        pickle.dump({"model": Payload(marker)}, f)
    with pytest.raises(files.UnsafeFileError, match="w.pkl"):
        files.load_pickle(tmp_path / "w.pkl", "weights file")
    assert not marker.exists()


def test_payload_refused_by_torch_is_reported_as_unsafe_not_corrupt(tmp_path):
    """Issue 20, item 10: a plain pickle whose global torch blocks ("... whose module posix is blocked")."""
    marker = tmp_path / "marker"
    with open(tmp_path / "w.pth", "wb") as f:
        pickle.dump({"model": Payload(marker)}, f, protocol=2)
    with pytest.raises(files.UnsafeFileError, match="refusing to load checkpoint .*w.pth"):
        files.load_torch(tmp_path / "w.pth", what="checkpoint")
    assert not marker.exists()


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_respect_the_umask(tmp_path, umask, mode):
    """Issue 20, item 10: files were 0600 whatever the umask (mkstemp's mode)."""
    old = os.umask(umask)
    try:
        files.write_json(tmp_path / "a.json", {})
        files.save_torch({"w": torch.zeros(1)}, tmp_path / "b.pth")
    finally:
        os.umask(old)
    assert [os.stat(tmp_path / n).st_mode & 0o777 for n in ("a.json", "b.pth")] == [mode, mode]


def _truncated(path):
    torch.save({"model": {"w": torch.randn(1000)}}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


BROKEN_FILES = {
    "truncated": _truncated,
    "empty": lambda p: p.write_bytes(b""),
    "garbage": lambda p: p.write_bytes(b"\x00not a torch file" * 10),
}


@pytest.mark.parametrize("kind", sorted(BROKEN_FILES))
def test_broken_torch_files_name_the_file(tmp_path, kind):
    path = tmp_path / f"{kind}.pth"
    BROKEN_FILES[kind](path)
    with pytest.raises(ValueError, match=f"cannot read checkpoint .*{kind}.pth: truncated or corrupt"):
        files.load_torch(path, what="checkpoint")
    with pytest.raises(ValueError, match=f"{kind}.pth"):
        adarand.ClassStats.load(path)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.pth"):
        files.load_torch(tmp_path / "nothere.pth", what="checkpoint")


def _full_disk_save(obj, f):
    f.write(b"partial bytes")
    raise OSError(errno.ENOSPC, "No space left on device")


def test_full_disk_names_the_target_leaves_no_tmp_and_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "last.pth"
    files.save_torch({"old": torch.zeros(1)}, target)
    monkeypatch.setattr(files.torch, "save", _full_disk_save)
    with pytest.raises(OSError, match="could not write .*last.pth: No space left") as info:
        files.save_torch({"new": torch.ones(1)}, target)
    assert info.value.errno == errno.ENOSPC
    assert os.listdir(tmp_path) == ["last.pth"]  # no temporary file left behind
    monkeypatch.undo()
    assert "old" in files.load_torch(target)


def test_two_writers_of_one_file_use_their_own_temporary_files(tmp_path):
    target = tmp_path / "x.json"
    with files.atomic_write(target, "w") as first:
        with files.atomic_write(target, "w") as second:
            temporaries = sorted(n for n in os.listdir(tmp_path) if n.endswith(".tmp"))
            second.write('{"writer": 2}')
        first.write('{"writer": 1}')
    assert len(temporaries) == 2 and all(n.startswith(".x.json.") for n in temporaries)
    assert os.listdir(tmp_path) == ["x.json"] and json.loads(target.read_text()) == {"writer": 1}


def test_concurrent_appends_never_interleave(tmp_path):
    path = tmp_path / "metrics.jsonl"

    def append(writer):
        for i in range(100):
            files.append_line(path, json.dumps({"writer": writer, "i": i, "pad": "x" * 5000}))

    threads = [threading.Thread(target=append, args=(w,)) for w in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for writer in ("a", "b"):
        assert [r["i"] for r in rows if r["writer"] == writer] == list(range(100))


@pytest.mark.slow
def test_lock_keeps_a_second_process_out_and_dies_with_it(tmp_path):
    holder = hold_lock(tmp_path)
    try:
        with pytest.raises(output_dir.OutputDirInUse, match="in use by another process"):
            output_dir.lock_output_dir(tmp_path)
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    output_dir.lock_output_dir(tmp_path)  # the lock died with its process: no stale lock
    output_dir.release_output_dir(tmp_path)


@pytest.mark.slow
def test_lock_names_its_holder_and_a_holder_that_is_no_longer_running(tmp_path):
    """Issue 30, item 7: a lock whose taker has ended (a child it forked still holds it) was reported as "in use by
    another process", with no pid."""
    holder = hold_lock(tmp_path)
    try:
        with pytest.raises(output_dir.OutputDirInUse, match=rf"in use by another process \(pid {holder.pid} holds "):
            output_dir.lock_output_dir(tmp_path)
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    pid, child = lock_left_behind(tmp_path / "left")
    try:
        with pytest.raises(output_dir.OutputDirInUse, match=rf"locked by a process left behind by pid {pid}, which took "
                                                       r".*\.lock and is no longer running"):
            output_dir.lock_output_dir(tmp_path / "left")
    finally:
        child.close()


@pytest.mark.slow
def test_claim_removes_the_temporary_file_of_a_save_killed_midway_and_nothing_else(tmp_path, caplog):
    left = killed_during_save(tmp_path / "last.pth")
    assert (tmp_path / left).read_bytes() == b"partial checkpoint"
    kept = ["notes.tmp", ".last.pth.tmp", ".last.pth.abc.tmp", "last.pth.abcdefgh.tmp", "sub/.last.pth.abcdefgh.tmp",
            ".dir.abcdefgh.tmp/x"]  # not atomic_write's names, or not directly in the directory
    for name in kept:
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    (tmp_path / ".link.abcdefgh.tmp").symlink_to(tmp_path / "notes.tmp")  # not a regular file
    with caplog.at_level(logging.WARNING, logger="adarand.runs.output_dir"):
        output_dir.claim_output_dir(tmp_path, resume=True, checkpoint_names=("last.pth",))
    output_dir.release_output_dir(tmp_path)
    assert not (tmp_path / left).exists() and all((tmp_path / name).exists() for name in kept)
    assert (tmp_path / ".link.abcdefgh.tmp").is_symlink()
    assert f"removed 1 temporary file(s) an interrupted save left in {tmp_path}: {left}" in caplog.text


def test_claim_refuses_another_runs_directory_unless_resuming(tmp_path):
    (tmp_path / "last.pth").write_bytes(b"")
    with pytest.raises(output_dir.OutputDirInUse, match="--resume.*new OUTPUT_DIR"):
        output_dir.claim_output_dir(tmp_path, resume=False, checkpoint_names=("last.pth",))
    output_dir.claim_output_dir(tmp_path, resume=True, checkpoint_names=("last.pth",))
    output_dir.release_output_dir(tmp_path)


def test_move_aside_takes_the_first_free_name_and_keeps_the_contents(tmp_path):
    run = tmp_path / "run"
    (tmp_path / "run.old1").mkdir()
    run.mkdir()
    (run / "results.json").write_text("{}")
    assert output_dir.move_aside(str(run)) == f"{run}.old2"
    assert not run.exists() and (tmp_path / "run.old2" / "results.json").read_text() == "{}"


# ---------------------------------------------------------------- statistics cache

def _stats(shift=0.0):
    sums = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64) + shift
    return adarand.ClassStats.from_sums(sums, sums.pow(2) + 1, torch.tensor([1.0, 1.0], dtype=torch.float64))


IDENTITY = {"backbone": "tiny", "weights_sha256": "aa", "dataset": "d", "root": "/r", "fraction": 1.0,
            "split_seed": 0, "transform": "T"}


def _compute_counter(shift=0.0):
    calls = []

    def compute():
        calls.append(1)
        return _stats(shift)
    return compute, calls


def test_cache_is_reused_for_the_same_identity(tmp_path):
    path = tmp_path / "class_stats.pt"
    compute, calls = _compute_counter()
    load_or_compute_stats(path, IDENTITY, compute)
    load_or_compute_stats(path, dict(IDENTITY), compute, num_classes=2, feat_dim=2)
    assert len(calls) == 1


@pytest.mark.parametrize("key,value", [("weights_sha256", "bb"), ("fraction", 0.5), ("split_seed", 1),
                                       ("dataset", "other"), ("transform", "T2")])
def test_cache_of_another_setup_is_recomputed_and_logged(tmp_path, caplog, key, value):
    path = tmp_path / "class_stats.pt"
    load_or_compute_stats(path, IDENTITY, _compute_counter()[0])
    compute, calls = _compute_counter(shift=1.0)
    with caplog.at_level(logging.INFO, logger="adarand.runs.stats_cache"):
        stats = load_or_compute_stats(path, {**IDENTITY, key: value}, compute)
    assert len(calls) == 1 and f"{key}: file" in caplog.text and "recomputing" in caplog.text
    saved = adarand.ClassStats.load(path)
    assert saved.meta["identity"][key] == value and torch.equal(saved.mean, stats.mean)


def test_explicit_file_of_another_setup_is_refused(tmp_path):
    path = tmp_path / "given.pt"
    load_or_compute_stats(path, IDENTITY, _compute_counter()[0])
    compute, calls = _compute_counter()
    with pytest.raises(ValueError, match="given.pt was produced by another set-up .*weights_sha256"):
        load_or_compute_stats(path, {**IDENTITY, "weights_sha256": "bb"}, compute, explicit=True)
    _stats().save(tmp_path / "no_identity.pt")  # written without an identity (older version, own tool)
    with pytest.raises(ValueError, match="no_identity.pt .*records no identity"):
        load_or_compute_stats(tmp_path / "no_identity.pt", IDENTITY, compute, explicit=True)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_or_compute_stats(tmp_path / "missing.pt", IDENTITY, compute, explicit=True)
    assert not calls


def test_unreadable_cache_is_an_error_naming_it(tmp_path):
    path = tmp_path / "class_stats.pt"
    path.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ValueError, match="class_stats.pt"):
        load_or_compute_stats(path, IDENTITY, _compute_counter()[0])


def test_weights_digest_sees_every_tensor():
    a = torch.nn.Linear(3, 2)
    b = torch.nn.Linear(3, 2)
    b.load_state_dict(a.state_dict())
    assert state_dict_digest(a) == state_dict_digest(b)
    with torch.no_grad():
        b.bias[1] += 1e-7
    assert state_dict_digest(a) != state_dict_digest(b)


# ---------------------------------------------------------------- divergence guard

def test_guard_names_the_term_and_first_iteration():
    guard = FiniteGuard(["loss", "ce", "regularizer"])
    guard.update(0, torch.tensor(1.0), torch.tensor(1.0), torch.tensor(0.5))
    guard.check("epoch 1")
    guard.update(1, torch.tensor(math.inf), torch.tensor(1.0), torch.tensor(math.nan))
    guard.update(2, torch.tensor(math.nan), torch.tensor(math.nan), torch.tensor(math.nan))
    assert guard.bad_terms() == [("loss", 1), ("ce", 2), ("regularizer", 1)]
    with pytest.raises(FloatingPointError, match=r"epoch 1.*loss first at iteration 1.*ce first at iteration 2"):
        guard.check("epoch 1")


def test_non_finite_weight_is_named():
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    check_finite_weights(net, "epoch 1")
    net[1].running_var[0] = math.inf
    with pytest.raises(FloatingPointError, match="'1.running_var'"):
        check_finite_weights(net, "epoch 2")


def test_guard_update_reads_nothing_back():
    """The per-step update launches device ops only: no op that copies a value to the host."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Recorder(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops.append(str(func))
            return func(*args, **(kwargs or {}))

    guard = FiniteGuard(["loss", "ce"])
    terms = torch.tensor(math.nan), torch.tensor(1.0)
    with Recorder() as recorder:
        guard.update(7, *terms)
    host_reads = [op for op in recorder.ops if any(s in op for s in ("_local_scalar_dense", "is_nonzero", "equal"))]
    assert recorder.ops and not host_reads, recorder.ops
    assert guard.bad_terms() == [("loss", 7)]


def test_figures_and_images_are_written_atomically(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    files.save_figure(fig, str(tmp_path / "plot.png"), dpi=50)
    plt.close(fig)
    files.save_image(Image.new("RGB", (4, 3), (255, 0, 0)), str(tmp_path / "red.jpg"), quality=95)
    assert (tmp_path / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(tmp_path / "red.jpg") as image:
        assert image.format == "JPEG" and image.size == (4, 3)
    with pytest.raises(ValueError, match=r"red\.unknown: no image format"):  # nothing written, no temporary
        files.save_image(Image.new("RGB", (4, 3)), str(tmp_path / "red.unknown"))
    assert sorted(os.listdir(tmp_path)) == ["plot.png", "red.jpg"]
