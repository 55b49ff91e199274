"""Checkpoint sealing and fallback (RELIABILITY.md #3): a truncated or missing newest checkpoint is never loaded."""

from __future__ import annotations

import random

from core.checkpoint import CheckpointManager, capture_rng_state, is_complete, restore_rng_state
from core.metrics import MetricsLogger, read_metrics


def write_ckpt(mgr, step, payload=b"x" * 100):
    tmp = mgr.begin(step)
    (tmp / "hf").mkdir()
    (tmp / "hf" / "model.bin").write_bytes(payload)
    return mgr.commit(step)


def test_latest_and_pruning(tmp_path):
    mgr = CheckpointManager(tmp_path, keep_last=2)
    assert mgr.latest() is None
    for s in (1, 2, 3):
        write_ckpt(mgr, s)
    assert mgr.latest().name == "step_00000003"
    assert [p.name for p in mgr.complete_checkpoints()] == ["step_00000002", "step_00000003"]
    assert CheckpointManager.step_of(mgr.latest()) == 3


def test_truncated_newest_falls_back(tmp_path):
    mgr = CheckpointManager(tmp_path, keep_last=3)
    write_ckpt(mgr, 1)
    newest = write_ckpt(mgr, 2)
    (newest / "hf" / "model.bin").write_bytes(b"x" * 10)  # truncated
    assert not is_complete(newest)
    assert mgr.latest().name == "step_00000001"


def test_marker_to_missing_folder_falls_back(tmp_path):
    mgr = CheckpointManager(tmp_path)
    write_ckpt(mgr, 5)
    (tmp_path / "latest").write_text("step_00000009")
    assert mgr.latest().name == "step_00000005"


def test_unsealed_checkpoint_is_invisible(tmp_path):
    mgr = CheckpointManager(tmp_path)
    write_ckpt(mgr, 1)
    tmp = mgr.begin(2)  # crash before commit
    (tmp / "state").write_text("half")
    assert mgr.latest().name == "step_00000001"


def test_rng_round_trip():
    import torch

    state = capture_rng_state()
    a = (random.random(), torch.rand(3))
    restore_rng_state(state)
    b = (random.random(), torch.rand(3))
    assert a[0] == b[0] and torch.equal(a[1], b[1])


def test_metrics_jsonl(tmp_path):
    import torch

    with MetricsLogger(tmp_path, tensorboard=True) as m:
        m.log(1, {"loss": torch.tensor(0.5), "lr": 1e-3})
        m.log(2, {"loss": 0.25, "note": "x"})
    rows = read_metrics(tmp_path)
    assert [r["step"] for r in rows] == [1, 2] and rows[0]["loss"] == 0.5 and rows[1]["note"] == "x"
    assert any((tmp_path / "tensorboard").iterdir())


# ---- issue 12: content checksums, safe loading, rotation, metrics, lock ----

import json  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import pickle  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from core.checkpoint import (  # noqa: E402
    CheckpointError,
    disk_full_error,
    file_sha256,
    is_disk_full,
    load_state,
    safe_deepspeed_load,
    set_aside,
    verify,
)
from core.metrics import prepare_metrics_file  # noqa: E402
from core.runlock import LOCK_FILE, RunLock, RunLockedError  # noqa: E402


@pytest.fixture(autouse=True)
def _rlvr_logs_reach_caplog(monkeypatch):
    """rlvr.cli.main (run by other tests in this process) stops the package loggers propagating to the root."""
    monkeypatch.setattr(logging.getLogger("rlvr"), "propagate", True)


class Payload:
    """Unpickling this runs `touch MARKER`: what a hostile state file would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def write_state_ckpt(mgr, step, state=None):
    import torch

    tmp = mgr.begin(step)
    (tmp / "hf").mkdir()
    (tmp / "hf" / "model.bin").write_bytes(os.urandom(8192))
    torch.save(state if state is not None else {"step": step, "rng": capture_rng_state()}, tmp / "trainer_state.pt")
    return mgr.commit(step)


def reseal(path: Path) -> None:
    """Rewrite the manifest to match tampered files: the checkpoint's sender controls the manifest too."""
    manifest = json.loads((path / "MANIFEST.json").read_text())
    for rel in manifest["files"]:
        manifest["files"][rel] = {"size": (path / rel).stat().st_size, "sha256": file_sha256(path / rel)}
    (path / "MANIFEST.json").write_text(json.dumps(manifest))


def test_same_size_corruption_is_caught_by_checksum_and_the_older_one_is_used(tmp_path, caplog):
    mgr = CheckpointManager(tmp_path, keep_last=3)
    write_state_ckpt(mgr, 1)
    newest = write_state_ckpt(mgr, 2)
    target = newest / "hf" / "model.bin"
    data = bytearray(target.read_bytes())
    data[100:4196] = os.urandom(4096)  # 4 KB of random bytes, same size (the injection)
    target.write_bytes(bytes(data))
    assert is_complete(newest)  # sizes alone cannot tell
    with caplog.at_level(logging.WARNING):
        assert CheckpointManager(tmp_path).latest().name == "step_00000001"
    assert "step_00000002" in caplog.text and "SHA-256" in caplog.text


@pytest.mark.parametrize("damage", ["zeroed", "garbled", "truncated_zip"])
def test_undeserialisable_state_file_is_skipped_even_with_a_matching_manifest(tmp_path, damage, caplog):
    mgr = CheckpointManager(tmp_path, keep_last=3)
    write_state_ckpt(mgr, 1)
    newest = write_state_ckpt(mgr, 2)
    state = newest / "trainer_state.pt"
    raw = state.read_bytes()
    state.write_bytes({"zeroed": bytes(len(raw)), "garbled": os.urandom(len(raw)),
                       "truncated_zip": raw[: len(raw) // 2]}[damage])
    reseal(newest)
    with caplog.at_level(logging.WARNING):
        assert CheckpointManager(tmp_path).latest().name == "step_00000001"
    assert "trainer_state.pt cannot be loaded safely" in caplog.text


def test_pickle_payload_in_a_state_file_never_runs(tmp_path):
    import torch

    marker = tmp_path / "payload-ran"
    mgr = CheckpointManager(tmp_path / "ckpt")
    bad = write_state_ckpt(mgr, 1, state={"step": 1, "x": Payload(marker)})
    reseal(bad)
    assert mgr.latest() is None and "cannot be loaded safely" in verify(bad)
    with pytest.raises(CheckpointError, match="trainer_state.pt cannot be loaded safely"):
        load_state(bad / "trainer_state.pt")
    # DeepSpeed's loader passes weights_only=False itself: inside safe_deepspeed_load that is overridden
    with safe_deepspeed_load(), pytest.raises(pickle.UnpicklingError):
        torch.load(bad / "trainer_state.pt", weights_only=False)
    assert not marker.exists()


def test_rotation_never_deletes_the_newest_usable_checkpoint(tmp_path):
    """keep_last=2 with the newest corrupted: the next commit keeps itself and step 1, the last good one before."""
    mgr = CheckpointManager(tmp_path, keep_last=2)
    write_state_ckpt(mgr, 1)
    second = write_state_ckpt(mgr, 2)
    (second / "hf" / "model.bin").write_bytes(os.urandom(8192))  # same size, other bytes
    mgr = CheckpointManager(tmp_path, keep_last=2)  # a resumed process: nothing verified yet
    assert mgr.latest().name == "step_00000001"
    write_state_ckpt(mgr, 3)
    assert (tmp_path / "step_00000001").is_dir()  # still one of the two newest usable ones
    assert [p.name for p in mgr.complete_checkpoints()] == ["step_00000001", "step_00000003"]
    write_state_ckpt(mgr, 4)
    assert [p.name for p in mgr.complete_checkpoints()] == ["step_00000003", "step_00000004"]
    assert not (tmp_path / "step_00000001").exists() and not (tmp_path / "step_00000002").exists()


def test_format1_manifest_is_checked_by_size(tmp_path):
    mgr = CheckpointManager(tmp_path)
    path = write_state_ckpt(mgr, 1)
    manifest = json.loads((path / "MANIFEST.json").read_text())
    manifest = {"step": 1, "files": {rel: e["size"] for rel, e in manifest["files"].items()}}
    (path / "MANIFEST.json").write_text(json.dumps(manifest))
    assert CheckpointManager(tmp_path).latest() == path


def test_rng_state_is_plain_data_loadable_with_weights_only(tmp_path):
    import numpy as np
    import torch

    torch.save({"rng": capture_rng_state()}, tmp_path / "s.pt")
    state = torch.load(tmp_path / "s.pt", weights_only=True)
    a = (random.random(), np.random.rand(), torch.rand(2))
    restore_rng_state(state["rng"])
    b = (random.random(), np.random.rand(), torch.rand(2))
    assert a[0] == b[0] and a[1] == b[1] and torch.equal(a[2], b[2])


def test_set_aside_keeps_an_earlier_run(tmp_path):
    mgr = CheckpointManager(tmp_path / "checkpoints")
    write_state_ckpt(mgr, 1)
    moved = set_aside(tmp_path / "checkpoints")
    assert moved.name.startswith("checkpoints.replaced-") and (moved / "step_00000001").is_dir()
    assert CheckpointManager(tmp_path / "checkpoints").latest() is None


def test_out_of_space_is_recognised_and_named(tmp_path, monkeypatch):
    import torch

    with pytest.raises(RuntimeError) as info:  # what torch says on a full disk: "unexpected pos", nothing more
        torch.save(torch.zeros(1000), "/dev/full")
    monkeypatch.setattr("core.checkpoint._free_bytes", lambda folder: 1000)
    assert is_disk_full(info.value, tmp_path)
    assert is_disk_full(OSError(28, "No space left on device"), tmp_path)
    monkeypatch.setattr("core.checkpoint._free_bytes", lambda folder: 10 * 2**30)
    assert not is_disk_full(info.value, tmp_path)  # plenty of room: some other write failure, not reported as space
    msg = str(disk_full_error(tmp_path, 5 * 2**30))
    assert str(tmp_path) in msg and "5.0 GB" in msg and "free" in msg


def test_metrics_torn_last_line_and_broken_line_are_dropped_on_resume(tmp_path, caplog):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 1}\n{"step": 2, "lo\n{"step": 3, "loss": 3}\n{"step": 4, "loss": 4}\n'
                    '{"step": 5, "lo')
    with pytest.raises(ValueError, match="line 2"):
        read_metrics(tmp_path)
    with caplog.at_level(logging.WARNING):
        prepare_metrics_file(tmp_path, resume_step=3)
    assert "line 2" in caplog.text and "torn" in caplog.text
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 3]
    with MetricsLogger(tmp_path, tensorboard=False, append=True) as m:
        m.log(4, {"loss": 4.0})
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 3, 4]


def test_a_new_run_never_overwrites_metrics(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": 1}\n')
    prepare_metrics_file(tmp_path, resume_step=None)
    with MetricsLogger(tmp_path, tensorboard=False) as m:
        m.log(1, {"loss": 2.0})
    old = list(tmp_path.glob("metrics.replaced-*.jsonl"))
    assert len(old) == 1 and json.loads(old[0].read_text())["loss"] == 1
    assert read_metrics(tmp_path)[0]["loss"] == 2.0


HOLD = ("import sys, time; from core.runlock import RunLock; RunLock(sys.argv[1]).acquire(); "
        "print('held', flush=True); time.sleep(120)")


def test_run_lock_refuses_a_second_writer_and_takes_over_a_dead_ones(tmp_path, caplog):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunLockedError, match=f"pid {holder.pid} on"):
            RunLock(tmp_path).acquire()
    finally:
        holder.kill()
        holder.wait()
    assert (tmp_path / LOCK_FILE).is_file()  # SIGKILL: the lock file stays behind, stale
    with caplog.at_level(logging.WARNING), RunLock(tmp_path):
        assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
        with pytest.raises(RunLockedError, match="this process"):
            RunLock(tmp_path).acquire()
    assert "no longer running" in caplog.text
    assert not (tmp_path / LOCK_FILE).exists()  # released


def test_run_lock_treats_a_reused_pid_as_stale(tmp_path):
    """The lock names a live PID (ours) but another start time: the process that wrote it is gone."""
    info = {"pid": os.getpid(), "host": __import__("socket").gethostname(), "start": "1", "since": "then"}
    (tmp_path / LOCK_FILE).write_text(json.dumps(info))
    with RunLock(tmp_path):
        pass
    other = {**info, "host": "another-host"}  # cannot be checked from here: held
    (tmp_path / LOCK_FILE).write_text(json.dumps(other))
    with pytest.raises(RunLockedError, match="another-host.*delete"):
        RunLock(tmp_path).acquire()
