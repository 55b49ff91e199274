"""The collective weight-sync transport inside the actors (rlvr.actors.weight_transport), without Ray: every wait is
bounded by weight_sync.timeout_s. NCCL cannot run on a CPU machine, so its two properties are checked against
torch's API as a stand-in records it: the group is created with the sync's timeout (without one, NCCL's watchdog
waits 10 minutes), and a collective whose work never completes (NCCL's `wait()` returns at once; a dead peer
leaves the work pending) is a WeightSyncError at the deadline. The real one-rank NCCL group runs in
scripts/gpu_check.sh on a GPU. gloo runs for real: a sender that joins and then never broadcasts."""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from core.engine import free_port
from rlvr.actors import weight_transport
from rlvr.errors import WeightSyncError

REPO = Path(__file__).resolve().parents[2]


class _Options:
    """What torch's ProcessGroupNCCL.Options offers: `_timeout`, 10 minutes unless set."""

    def __init__(self):
        self._timeout = datetime.timedelta(minutes=10)


class _Work:
    """An NCCL work: wait() returns True at once (it only orders the CUDA stream); is_completed() says whether the
    collective finished: never, for one stuck on a dead peer."""

    def __init__(self, completes: bool):
        self.completes = completes

    def wait(self, timeout=None):
        return True

    def is_completed(self):
        return self.completes


def _nccl_stand_in(completing_broadcasts: int):
    """A ProcessGroupNCCL stand-in whose first `completing_broadcasts` broadcasts complete and later ones never."""

    class ProcessGroupNCCL:
        Options = _Options
        created = []

        def __init__(self, store, rank, world_size, options):
            self.options, self.calls = options, 0
            ProcessGroupNCCL.created.append(self)

        def broadcast(self, tensors, opts):
            self.calls += 1
            return _Work(self.calls <= completing_broadcasts)

    return ProcessGroupNCCL


def _nccl_args(timeout_s: float, startup_timeout_s: float = 30.0) -> dict:
    return {"host": "127.0.0.1", "port": free_port(), "world_size": 1, "backend": "nccl", "timeout_s": timeout_s,
            "startup_timeout_s": startup_timeout_s, "device": "cpu"}


@pytest.fixture
def forget_groups():
    before = dict(weight_transport._GROUPS)
    yield
    weight_transport._GROUPS.clear()
    weight_transport._GROUPS.update(before)


def test_the_nccl_group_is_created_with_the_sync_timeout(monkeypatch, forget_groups):
    stand_in = _nccl_stand_in(completing_broadcasts=10)
    monkeypatch.setattr(dist, "ProcessGroupNCCL", stand_in, raising=False)
    weight_transport.join_group(rank=0, **_nccl_args(timeout_s=7.0))
    assert stand_in.created[-1].options._timeout == datetime.timedelta(seconds=7)


def test_an_nccl_broadcast_that_never_completes_is_a_weight_sync_error_at_the_deadline(monkeypatch, forget_groups):
    monkeypatch.setattr(dist, "ProcessGroupNCCL", _nccl_stand_in(completing_broadcasts=0), raising=False)
    t0 = time.monotonic()
    with pytest.raises(WeightSyncError, match="did not complete within 1s .*stalled or dead member"):
        weight_transport.join_group(rank=0, **_nccl_args(timeout_s=60, startup_timeout_s=1.0))
    assert time.monotonic() - t0 < 5

    monkeypatch.setattr(dist, "ProcessGroupNCCL", _nccl_stand_in(completing_broadcasts=1), raising=False)
    args = _nccl_args(timeout_s=1.0)
    weight_transport.join_group(rank=0, **args)  # its probe broadcast completes; the weights' never do
    t0 = time.monotonic()
    with pytest.raises(WeightSyncError, match="did not complete within 1s"):
        weight_transport.send_broadcast({"w": torch.zeros(3), "b": torch.zeros(1)}, **args)
    with pytest.raises(WeightSyncError, match="did not complete within 1s"):
        weight_transport.receive_broadcast([("w", "float32", [3])], **args)
    assert time.monotonic() - t0 < 8


def test_a_gloo_sender_that_stops_broadcasting_is_a_weight_sync_error_within_the_timeout():
    """Member 0 (learner rank 0, which hosts the group) joins, then sleeps instead of sending: the receiving
    member (a generator) fails within timeout_s instead of hanging."""
    port = free_port()
    args = {"host": "127.0.0.1", "port": port, "world_size": 2, "backend": "gloo", "timeout_s": 3.0,
            "startup_timeout_s": 60.0, "device": "cpu"}
    sender = textwrap.dedent(f"""
        import time
        from rlvr.actors.weight_transport import join_group
        join_group(rank=0, **{args!r})
        print("joined", flush=True)
        time.sleep(60)
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", sender], env=env, stdout=subprocess.PIPE, text=True)
    try:
        weight_transport.join_group(rank=1, **args)
        assert proc.stdout.readline().strip() == "joined"
        t0 = time.monotonic()
        with pytest.raises(WeightSyncError, match="did not complete within 3s"):
            weight_transport.receive_broadcast([("w", "float32", [4])], **args)
        assert time.monotonic() - t0 < 15
    finally:
        proc.kill()
        proc.wait()
        weight_transport._GROUPS.pop(("127.0.0.1", port), None)
