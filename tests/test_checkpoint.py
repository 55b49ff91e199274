"""Checkpoint sealing and fallback (RELIABILITY.md #3): a truncated or missing newest checkpoint is never loaded."""

from __future__ import annotations

import random

from rlvr.utils.checkpoint import CheckpointManager, capture_rng_state, is_complete, restore_rng_state
from rlvr.utils.metrics import MetricsLogger, read_metrics


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
