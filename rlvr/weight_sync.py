"""Learner -> generator weight sync: one interface (`WeightSync.sync`, `WeightSync.verify`), two transports.

- object_store (CPU default): learner rank 0 returns its full state dict once into the Ray object store; every
  generator receives the same object reference and reloads in place (vLLM `reload_weights`; HF `copy_`).
- collective (CUDA default, "nccl"): a dedicated process group of learner rank 0 + every generator (its own
  TCPStore, never the learners' group); rank 0 broadcasts tensor by tensor. The same code runs with gloo on CPU
  (`transport: gloo`, used by the tests), which is how it is exercised without a GPU.
Under ZeRO-3 every learner rank takes part in gathering full parameters before rank 0 sends.

A sync that stalls (a dead or hung peer) raises `WeightSyncError` after `timeout_s`: every wait is
`ray.get(..., timeout=...)` and the collective group is created with the same timeout.

`verify`: each generator decodes a fixed probe greedily; the learner scores the same tokens; the largest
|log-prob difference| must be within `tolerance`, else `WeightSyncError` (stale or corrupted generator weights).
"""

from __future__ import annotations

import datetime
import time
from typing import Any

from rlvr.utils.logging import get_logger

log = get_logger(__name__)

PROBE_MESSAGES = [{"role": "user", "content": "Count from 1 to 5, then say the answer is 42."}]
PROBE_TOKENS = 12


class WeightSyncError(RuntimeError):
    pass


# ---- collective transport: process-local group cache + send/receive (run inside the actors) ----

_GROUPS: dict[tuple[str, int], Any] = {}


def _group(host: str, port: int, rank: int, world_size: int, backend: str, timeout_s: float):
    """A process group of learner rank 0 (rank 0 here) and the generators, separate from any default group."""
    import torch.distributed as dist

    key = (host, port)
    if key not in _GROUPS:
        timeout = datetime.timedelta(seconds=timeout_s)
        store = dist.TCPStore(host, port, world_size, is_master=rank == 0, timeout=timeout)
        if backend == "nccl":
            pg = dist.ProcessGroupNCCL(store, rank, world_size, dist.ProcessGroupNCCL.Options())
        elif backend == "gloo":
            pg = dist.ProcessGroupGloo(store, rank, world_size, timeout)
        else:
            raise ValueError(f"unknown collective backend {backend!r}")
        _GROUPS[key] = (pg, store)
    return _GROUPS[key][0]


def _broadcast(pg, tensor, timeout_s: float) -> None:
    import torch.distributed as dist

    opts = dist.BroadcastOptions()
    opts.rootRank = 0
    opts.timeout = datetime.timedelta(seconds=timeout_s)
    work = pg.broadcast([tensor], opts)
    if not work.wait(datetime.timedelta(seconds=timeout_s)):
        raise WeightSyncError(f"weight broadcast did not complete within {timeout_s:.0f}s")


def send_broadcast(sd: dict[str, Any], *, device: str, host: str, port: int, world_size: int, backend: str,
                   timeout_s: float, version: int = 0) -> int:
    pg = _group(host, port, 0, world_size, backend, timeout_s)
    dev = "cpu" if backend == "gloo" else device
    for tensor in sd.values():
        _broadcast(pg, tensor.to(dev).contiguous(), timeout_s)
    return version


def receive_broadcast(spec: list[tuple[str, str, list[int]]], *, device: str, host: str, port: int,
                      world_size: int, backend: str, timeout_s: float, rank: int) -> dict[str, Any]:
    import torch

    pg = _group(host, port, rank, world_size, backend, timeout_s)
    dev = "cpu" if backend == "gloo" else device
    out = {}
    for name, dtype, shape in spec:
        buf = torch.empty(shape, dtype=getattr(torch, dtype), device=dev)
        _broadcast(pg, buf, timeout_s)
        out[name] = buf
    return out


# ---- the interface the driver uses ----

class WeightSync:
    def __init__(self, learners, generators: list, *, transport: str, timeout_s: float, tolerance: float,
                 probe_prompt: list[int], master_addr: str = "127.0.0.1", generator_names: list[str] | None = None):
        self.learners = learners  # rlvr.actors.group.LearnerGroup
        self.generators = generators  # Ray actor handles of rlvr.actors.generator.Generator
        self.transport = transport
        self.timeout_s = timeout_s
        self.tolerance = tolerance
        self.probe_prompt = probe_prompt
        self.gen_names = generator_names or [f"generator {i}" for i in range(len(generators))]
        self.version = 0
        self._spec = None
        self._group_args = None
        if transport in ("nccl", "gloo"):
            from sft_dpo.engine import free_port

            self._group_args = {"host": master_addr, "port": free_port(), "world_size": 1 + len(generators),
                                "backend": transport, "timeout_s": timeout_s}

    def _get(self, refs, what: str, names: list[str] | None = None):
        """Bounded wait: a stall is a WeightSyncError, a dead actor an ActorFailure (rlvr.actors.group)."""
        from rlvr.actors.group import ActorFailure, get_all

        try:
            return get_all(refs, timeout_s=self.timeout_s, what=what, names=names)
        except ActorFailure as err:
            if err.__cause__ is None:  # the timeout case
                raise WeightSyncError(f"{what} did not finish within weight_sync.timeout_s={self.timeout_s:.0f}s "
                                      "(a stalled learner or generator)") from None
            raise

    def sync(self) -> dict[str, float]:
        """Push the learner's current policy weights to every generator. Returns timing metrics."""
        t0 = time.perf_counter()
        self.version += 1
        if self.transport == "object_store":
            refs = self.learners.call("full_state_dict")  # every rank (ZeRO-3 gathers collectively)
            sd_ref = refs[0]
            loads = [g.load_weights.remote(sd_ref, self.version) for g in self.generators]
            self._get(refs[1:] + loads, "weight sync (object store)", self.learners.names[1:] + self.gen_names)
        else:
            if self._spec is None:
                self._spec = self._get(self.learners.actors[0].weight_spec.remote(), "weight spec")
            sends = self.learners.call("broadcast_weights", self._group_args)
            recvs = [g.receive_weights.remote(self._spec, {**self._group_args, "rank": i + 1}, self.version)
                     for i, g in enumerate(self.generators)]
            self._get(sends + recvs, f"weight sync ({self.transport} broadcast)", self.learners.names + self.gen_names)
        return {"time/sync_s": time.perf_counter() - t0}

    def verify(self) -> float:
        """Greedy-decode the probe on every generator and compare its log-probs with the learner's."""
        worst = 0.0
        outs = self._get([g.generate.remote([self.probe_prompt], [0], max_new_tokens=PROBE_TOKENS, temperature=0.0)
                          for g in self.generators], "weight-sync check (generation)", self.gen_names)
        for i, (rollout,) in enumerate(outs):
            if not rollout.response_ids:
                continue
            # every rank runs the forward (ZeRO-3 gathers parameters collectively); rank 0's answer is used
            ref = self._get(self.learners.call("sequence_logprobs", self.probe_prompt, rollout.response_ids),
                            "weight-sync check (learner log-probs)", self.learners.names)[0]
            diff = max(abs(a - b) for a, b in zip(rollout.logprobs, ref))
            worst = max(worst, diff)
            if diff > self.tolerance:
                raise WeightSyncError(
                    f"generator {i} disagrees with the learner after weight sync {self.version}: max |logprob "
                    f"difference| {diff:.3g} > weight_sync.tolerance {self.tolerance:g} on the probe sequence "
                    "(stale or corrupted generator weights)")
        return worst
