"""Learner -> generator weight sync: one interface (`WeightSync.sync`, `WeightSync.verify`), three transports.

- object_store: learner rank 0 returns its full state dict once into the Ray object store; every generator
  receives the same object reference and reloads in place (vLLM `reload_weights`; HF `copy_`). Works on every
  layout, including a learner and a generator sharing one GPU.
- nccl: a dedicated process group of learner rank 0 + every generator (its own TCPStore, never the learners'
  group); rank 0 broadcasts tensor by tensor, GPU to GPU. Needs each member on its own GPU: NCCL cannot put two
  ranks on one device, and a learner and a generator colocated on one GPU would deadlock or fail there.
- gloo: the same group and broadcast over TCP through CPU memory: any layout, any node (used by the CPU tests).
`auto` (`choose_transport`) picks nccl only when learner rank 0 and every generator hold CUDA GPUs and no two of
them share one; otherwise the object store (a colocated GPU layout, or CPU).

The collective group meets at learner rank 0's node address and a port free there (`dist.master_addr`
overrides the address): `connect()` forms it eagerly, and a group that does not form within
`startup_timeout_s` is a `WeightSyncError` naming the address and who did not join. Under ZeRO-3 every learner
rank takes part in gathering full parameters before rank 0 sends.

A sync that stalls (a dead or hung peer) raises `WeightSyncError` after `timeout_s`: every wait is
`ray.get(..., timeout=...)` and the collective group is created with the same timeout.

The collective transports' in-actor half (group membership, send, receive) is rlvr.actors.weight_transport; this
module is the driver's half and never runs inside an actor.

`verify`: each generator decodes a fixed probe greedily; the learner scores the same tokens; the largest
|log-prob difference| must be within the tolerance for the two sides' compute dtypes (rlvr.weight_check: fp32
`weight_sync.tolerance`, bf16 `weight_sync.bf16_tolerance`), else `WeightSyncError` (stale or corrupted generator
weights). A stale generator after a few small updates can hide under the bf16 bound; wrong, missing or corrupted
weights cannot.
"""

from __future__ import annotations

import time
from typing import Any

import ray

from core.logging import get_logger
from rlvr.actors.group import ActorGroup, cause_line
from rlvr.config import BF16_TOLERANCE
from rlvr.errors import ActorFailure, WeightSyncError
from rlvr.weight_check import PROBE_MESSAGES, PROBE_TOKENS, max_gap, tolerance_for

__all__ = ["PROBE_MESSAGES", "TRANSPORTS", "WeightSync", "choose_transport"]

log = get_logger(__name__)

TRANSPORTS = ("auto", "object_store", "nccl", "gloo")


def choose_transport(requested: str, learner: dict[str, Any], generators: list[dict[str, Any]]) -> str:
    """The transport to use, from the config value and where the actors sit (`info()` of learner rank 0 and of
    each generator: device, node_id, gpu_ids). `nccl` where it cannot work is an error, never a deadlock."""
    if requested not in TRANSPORTS:
        raise ValueError(f"unknown weight_sync.transport {requested!r}; use one of {', '.join(TRANSPORTS)}")
    members = [("learner rank 0", learner)] + [(f"generator {i}", g) for i, g in enumerate(generators)]
    problem = None
    owner: dict[tuple[Any, str], str] = {}
    for name, m in members:
        if m.get("device") != "cuda" or not m.get("gpu_ids"):
            problem = f"{name} is not on a CUDA GPU (device {m.get('device')}, GPUs {m.get('gpu_ids') or 'none'})"
            break
        for gpu in m["gpu_ids"]:
            key = (m.get("node_id"), gpu)
            if key in owner:
                problem = f"{name} shares GPU {gpu} of node {m.get('node_ip', m.get('node_id'))} with {owner[key]}"
                break
            owner[key] = name
        if problem:
            break
    if requested == "auto":
        return "object_store" if problem else "nccl"
    if requested == "nccl" and problem:
        raise WeightSyncError(f"weight_sync.transport=nccl needs learner rank 0 and every generator on a GPU of "
                              f"their own, but {problem}. Use weight_sync.transport=auto (object store here) or "
                              "gloo, or give generators their own GPUs (generation.num_gpus=1, resources.colocate="
                              "false)")
    return requested


# ---- the interface the driver uses ----

class WeightSync:
    def __init__(self, learners, generators, *, transport: str, timeout_s: float, tolerance: float,
                 probe_prompt: list[int], startup_timeout_s: float = 120.0, master_addr: str | None = None,
                 bf16_tolerance: float = BF16_TOLERANCE):
        self.learners = learners  # rlvr.actors.group.LearnerGroup
        self.generators = generators  # rlvr.actors.group.GeneratorGroup (or a subset of one)
        if transport not in TRANSPORTS[1:]:
            raise ValueError(f"WeightSync needs a concrete transport (object_store, nccl, gloo), got {transport!r}")
        self.transport = transport
        self.timeout_s = timeout_s
        self.startup_timeout_s = startup_timeout_s
        self.tolerance = tolerance
        self.bf16_tolerance = bf16_tolerance
        self.probe_prompt = probe_prompt
        self.master_addr = master_addr
        self.version = 0
        self._spec = None
        self._group_args: dict[str, Any] | None = None
        self._pending: tuple[list, list] | None = None  # an overlapped sync's (learner refs, generator reloads)

    def _get(self, refs, what: str, group, ranks: list[int] | None = None, timeout_s: float | None = None):
        """Bounded wait: a stall is a WeightSyncError, a dead actor an ActorFailure (rlvr.actors.group)."""
        timeout_s = timeout_s or self.timeout_s
        try:
            return group.get(refs, what, ranks=ranks, timeout_s=timeout_s)
        except ActorFailure as err:
            if err.__cause__ is None:  # the timeout case
                raise WeightSyncError(f"{what} did not finish within {timeout_s:.0f}s ({err}; a stalled learner or "
                                      "generator)") from None
            raise

    def _both(self, learner_refs: list, learner_ranks: list[int], gen_refs: list, what: str,
              timeout_s: float | None = None) -> None:
        """Wait for learner and generator calls together, every actor named."""
        both = ActorGroup([], [self.learners.names[r] for r in learner_ranks] + list(self.generators.names),
                          timeout_s=self.timeout_s,
                          infos=[self.learners.infos[r] for r in learner_ranks] + list(self.generators.infos))
        self._get(learner_refs + gen_refs, what, both, timeout_s=timeout_s)

    def connect(self) -> None:
        """Collective transports: form the weight-sync group now (learner rank 0 hosts it on its node)."""
        if self.transport == "object_store" or self._group_args is not None:
            return
        rank0 = self.learners.actors[0]
        host, port = self._get([rank0.rendezvous_address.remote()], "weight-sync rendezvous address", self.learners,
                               ranks=[0], timeout_s=self.startup_timeout_s)[0]
        host = self.master_addr or host
        args = {"host": host, "port": port, "world_size": 1 + len(self.generators), "backend": self.transport,
                "timeout_s": self.timeout_s, "startup_timeout_s": self.startup_timeout_s}
        joins = [g.join_weight_sync.remote({**args, "rank": i + 1}) for i, g in enumerate(self.generators.actors)]
        try:
            self._both([rank0.join_weight_sync.remote(args)], [0], joins, f"forming the weight-sync group "
                       f"({self.transport}) at {host}:{port}", timeout_s=self.startup_timeout_s + 30)
        except ray.exceptions.RayTaskError as err:
            raise WeightSyncError(f"the weight-sync group ({self.transport}) did not form at {host}:{port}: "
                                  f"{getattr(err, 'actor_name', 'a member')}: {cause_line(err)}") from None
        self._group_args = args
        log.info("weight-sync group (%s) formed at %s:%d with %d generator(s)", self.transport, host, port,
                 len(self.generators))

    def sync(self, *, wait: bool = True) -> dict[str, float]:
        """Push the learner's current policy weights to every generator. Returns time/sync_s: the seconds the
        driver was held up, waiting for the previous overlapped sync included.

        wait=False (the trainer's choice under asynchronous rollouts) with the object-store transport: return once
        the learners have handed over their weights and the reloads are sent. A generator runs its calls one at a
        time in the order sent, so the reload still comes before any generation sent after this call; the learners
        meanwhile go on to the next step instead of waiting for the generators to finish the batch in progress and
        reload. The next `sync`, `finish` or `verify` waits for it and raises its errors. The collective transports
        always wait: the learners take part in the broadcast, which a generator joins only when its current call
        is done."""
        t0 = time.perf_counter()
        self.finish()
        self.version += 1
        gens = self.generators.actors
        if self.transport == "object_store":
            refs = self.learners.call("full_state_dict")  # every rank (ZeRO-3 gathers collectively)
            sd_ref = refs[0]  # learner rank 0's copy, in the object store: never fetched by the driver
            loads = [g.load_weights.remote(sd_ref, self.version) for g in gens]
            self._pending = (refs[1:], loads)
            if wait:
                self.finish()
        else:
            self.connect()
            if self._spec is None:
                self._spec = self._get([self.learners.actors[0].weight_spec.remote()], "weight spec", self.learners,
                                       ranks=[0])[0]
            sends = self.learners.call("broadcast_weights", self._group_args)
            recvs = [g.receive_weights.remote(self._spec, {**self._group_args, "rank": i + 1}, self.version)
                     for i, g in enumerate(gens)]
            self._both(sends, list(range(len(sends))), recvs, f"weight sync ({self.transport} broadcast)")
        return {"time/sync_s": time.perf_counter() - t0}

    @property
    def pending(self) -> bool:
        """Whether an overlapped sync (`sync(wait=False)`) has not been waited for yet."""
        return self._pending is not None

    def finish(self) -> None:
        """Wait until every generator has loaded the last overlapped sync's weights (a no-op when none is
        pending); a failed or stalled reload raises here, naming the actor."""
        if self._pending is None:
            return
        learner_refs, loads = self._pending
        self._pending = None
        self._both(learner_refs, list(range(1, len(learner_refs) + 1)), loads,
                   f"weight sync {self.version} (object store)")

    def verify(self) -> float:
        """Greedy-decode the probe on every generator and compare its log-probs with the learner's."""
        self.finish()
        worst = 0.0
        outs = self._get(self.generators.call("generate", [self.probe_prompt], [0], max_new_tokens=PROBE_TOKENS,
                                              temperature=0.0), "weight-sync check (generation)", self.generators)
        for i, (rollout,) in enumerate(outs):
            if not rollout.response_ids:
                continue
            # every rank runs the forward (ZeRO-3 gathers parameters collectively); rank 0's answer is used
            ref = self._get(self.learners.call("sequence_logprobs", self.probe_prompt, rollout.response_ids),
                            "weight-sync check (learner log-probs)", self.learners)[0]
            diff = max_gap(rollout.logprobs, ref)
            worst = max(worst, diff)
            key, tolerance = tolerance_for(self.learners.infos[0], self.generators.infos[i],
                                           tolerance=self.tolerance, bf16_tolerance=self.bf16_tolerance)
            if diff > tolerance:
                raise WeightSyncError(
                    f"generator {i} disagrees with the learner after weight sync {self.version}: max |logprob "
                    f"difference| {diff:.3g} > weight_sync.{key} {tolerance:g} on the probe sequence "
                    "(stale or corrupted generator weights)")
        return worst
