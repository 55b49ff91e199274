"""The collective weight-sync transports, as they run inside the actors (no Ray here): learner rank 0 and every
generator join one process group of their own (its own TCPStore at rank 0's node, never the learners' group);
rank 0 broadcasts the policy's tensors one by one and each generator receives them into buffers of the spec's
shapes. `nccl` moves them GPU to GPU; `gloo` over TCP through CPU memory (any layout, any node).

The driver side (placing the calls, choosing the transport, the object-store path, the check after a sync) is
rlvr.weight_sync. Every wait here is bounded: a group that does not form within `startup_timeout_s`, or a
broadcast that does not complete within `timeout_s`, is a WeightSyncError, never a hang. An NCCL work's `wait()`
only orders the current CUDA stream after the collective and returns at once, so the wait polls the work until
its deadline; the NCCL group itself is also created with `timeout_s` (its watchdog aborts a collective stuck past
it; the default would be 10 minutes).
"""

from __future__ import annotations

import datetime
import time
from typing import Any

import torch
import torch.distributed as dist

from core.engine import bind_gloo_to, tcp_store
from rlvr.actors.node import whereami
from rlvr.errors import WeightSyncError

# process-local: (host, port) of a weight-sync group -> (process group, its store)
_GROUPS: dict[tuple[str, int], Any] = {}


def join_group(*, host: str, port: int, rank: int, world_size: int, backend: str, timeout_s: float,
               startup_timeout_s: float, device: str) -> None:
    """Create this process's member of the weight-sync group (rank 0: learner rank 0, which hosts the store) and
    check it works with one tiny broadcast (NCCL forms its communicator lazily, at the first collective)."""
    key = (host, port)
    if key in _GROUPS:
        return
    if backend == "gloo":
        bind_gloo_to(whereami()["node_ip"])  # gloo binds the hostname's address otherwise (often loopback)
    try:
        store = tcp_store(host, port, world_size, is_master=rank == 0,
                          timeout=datetime.timedelta(seconds=startup_timeout_s))
    except (RuntimeError, OSError) as err:
        raise WeightSyncError(f"weight-sync group member {rank} of {world_size} could not reach {host}:{port} "
                              f"within {startup_timeout_s:.0f}s ({type(err).__name__})") from err
    pg = new_group(backend, store, rank, world_size, timeout_s)
    _GROUPS[key] = (pg, store)
    started = time.monotonic()
    _until_done(_broadcast(pg, torch.zeros(1, device="cpu" if backend == "gloo" else device), startup_timeout_s),
                started, startup_timeout_s)


def new_group(backend: str, store, rank: int, world_size: int, timeout_s: float):
    """A process group of its own on `store` (not the default group), whose collectives time out after
    `timeout_s`."""
    timeout = datetime.timedelta(seconds=timeout_s)
    if backend == "nccl":
        options = dist.ProcessGroupNCCL.Options()
        options._timeout = timeout
        return dist.ProcessGroupNCCL(store, rank, world_size, options)
    if backend == "gloo":
        return dist.ProcessGroupGloo(store, rank, world_size, timeout)
    raise ValueError(f"unknown collective backend {backend!r}")


def _group(host: str, port: int):
    try:
        return _GROUPS[(host, port)][0]
    except KeyError:
        raise WeightSyncError(f"this process has not joined the weight-sync group at {host}:{port}") from None


def _broadcast(pg, tensor, timeout_s: float):
    """Issue one broadcast from member 0 and wait for it: gloo's wait blocks (and raises after `timeout_s`);
    NCCL's returns once the current stream is ordered after the collective (`_until_done` waits for it)."""
    opts = dist.BroadcastOptions()
    opts.rootRank = 0
    opts.timeout = datetime.timedelta(seconds=timeout_s)
    work = pg.broadcast([tensor], opts)
    try:
        waited = work.wait(datetime.timedelta(seconds=timeout_s))
    except RuntimeError as err:  # gloo's timeout or a lost peer (DistBackendError is a RuntimeError)
        raise WeightSyncError(f"weight broadcast failed or did not complete within {timeout_s:.0f}s "
                              f"({str(err).splitlines()[0] if str(err) else type(err).__name__})") from err
    if not waited:
        raise WeightSyncError(f"weight broadcast did not complete within {timeout_s:.0f}s")
    return work


def _until_done(work, started: float, timeout_s: float) -> None:
    """Poll the last collective of a stream (they complete in order) until `started + timeout_s`."""
    while not work.is_completed():
        if time.monotonic() - started > timeout_s:
            raise WeightSyncError(f"weight broadcast did not complete within {timeout_s:.0f}s (a stalled or dead "
                                  "member of the weight-sync group)")
        time.sleep(0.001)


def send_broadcast(sd: dict[str, Any], *, device: str, host: str, port: int, backend: str, timeout_s: float,
                   version: int = 0, **_) -> int:
    pg = _group(host, port)
    dev = "cpu" if backend == "gloo" else device
    started, work = time.monotonic(), None
    for tensor in sd.values():
        work = _broadcast(pg, tensor.to(dev).contiguous(), timeout_s)
    if work is not None:
        _until_done(work, started, timeout_s)
    return version


def receive_broadcast(spec: list[tuple[str, str, list[int]]], *, device: str, host: str, port: int, backend: str,
                      timeout_s: float, **_) -> dict[str, Any]:
    pg = _group(host, port)
    dev = "cpu" if backend == "gloo" else device
    out, started, work = {}, time.monotonic(), None
    for name, dtype, shape in spec:
        buf = torch.empty(shape, dtype=getattr(torch, dtype), device=dev)
        work = _broadcast(pg, buf, timeout_s)
        out[name] = buf
    if work is not None:
        _until_done(work, started, timeout_s)
    return out
