"""The Ray layer: place learner ranks and generators, wire their addresses, fan out calls. Only placement and
wiring live here; the logic is in the plain classes `Learner` and `Generator` (STYLE.md #2).

Placement: each group is one placement group (`PACK`: as few nodes as will hold it), or a slice of the shared
one when `resources.colocate` is on. A group that cannot be placed within `startup_timeout_s` is a
`StartupError` that lists what was asked and what the cluster has; the actors are never left pending silently.

Rendezvous: the learners' torch.distributed group meets at learner rank 0's node address (as Ray knows it) and a
port free on that node, never at the driver's loopback; `dist.master_addr`/`master_port` override it. A rank that
cannot join within `startup_timeout_s` is a `StartupError` naming the rank, its node and the address.

Every other wait is bounded too (`call_timeout_s`): a dead actor surfaces as `ActorFailure` naming the actor, its
pid and node (and saying when the node itself is gone) as soon as Ray reports it, a hung one after the timeout.
"""

from __future__ import annotations

import os
import re
import socket
import time
import uuid
from pathlib import Path
from typing import Any

import ray
from ray.util.placement_group import placement_group, placement_group_table, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from core.logging import get_logger
from rlvr.actors.generator import Generator
from rlvr.actors.learner import Learner
from rlvr.errors import ActorFailure, StartupError

log = get_logger(__name__)

RENDEZVOUS_MARGIN_S = 15.0  # the driver waits this much longer than the ranks' own rendezvous timeout
PEER_GRACE_S = 15.0  # after a collective fails in one actor, how long to wait for Ray to report a dead peer
# a collective that failed because a peer went away (gloo, NCCL): a consequence, not the cause
_COMMUNICATION_ERROR = re.compile(r"gloo|nccl|connection (reset|closed|refused) by peer|broken pipe", re.I)


def _env(threads: int, extra: dict[str, str] | None = None) -> dict[str, Any]:
    env = {"OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false", "RAY_DEDUP_LOGS": "0"}
    for key in ("DS_ACCELERATOR", "RLVR_CACHE", "HF_HOME", "TORCH_EXTENSIONS_DIR", "PYTHONPATH",
                "GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME"):
        if key in os.environ:
            env[key] = os.environ[key]
    env.update(extra or {})
    return {"env_vars": env}


def _node_ips() -> dict[str, str]:
    return {n["NodeID"]: n["NodeManagerAddress"] for n in ray.nodes()}


def _lost_nodes(node_ips: list[str]) -> list[str]:
    """Of these node addresses, the ones that are gone: the Ray cluster no longer reports them alive, or their
    raylet does not accept a connection (the cluster notices a lost node only after missed heartbeats)."""
    nodes = {n["NodeManagerAddress"]: n for n in ray.nodes() if n["Alive"]}
    lost = set()
    for ip in filter(None, node_ips):
        if ip not in nodes:
            lost.add(ip)
            continue
        try:
            socket.create_connection((ip, nodes[ip]["NodeManagerPort"]), timeout=3).close()
        except OSError:
            lost.add(ip)
    return sorted(lost)


def get_all(refs: list, *, timeout_s: float, what: str, names: list[str] | None = None,
            nodes: list[str] | None = None) -> list:
    """ray.get with a deadline, turning actor death and timeouts into `ActorFailure` with a clear message.
    `names[i]` / `nodes[i]` name the actor behind `refs[i]` and its node address. Results are collected as they
    arrive, so one actor's death is reported at once even while the others are still busy (or blocked in a
    collective waiting for the dead one)."""
    names = names if names and len(names) == len(refs) else [f"actor {i}" for i in range(len(refs))]
    index = {ref: i for i, ref in enumerate(refs)}
    results: list[Any] = [None] * len(refs)
    pending = list(refs)
    deadline = time.monotonic() + timeout_s
    while pending:
        ready, pending = ray.wait(pending, num_returns=1, timeout=max(0.0, deadline - time.monotonic()))
        if not ready:
            waiting = [names[index[r]] for r in pending]
            err = ActorFailure(f"{what}: no answer within {timeout_s:.0f}s from {', '.join(waiting)}; an actor is "
                               "hung or starved of CPU")
            err.waiting = waiting
            raise err from None
        for ref in ready:
            i = index[ref]
            try:
                results[i] = ray.get(ref)
            except ray.exceptions.RayTaskError as err:  # the actor's own exception: passed on, with who raised it
                err.actor_name = names[i]
                if pending and _COMMUNICATION_ERROR.search(str(err)):
                    # its collective broke because a peer went away: report the peer's death, the cause
                    _raise_dead_peer(pending, index, names, nodes, what, cause=f"{names[i]}: {_last_line(err)}")
                raise
            except (ray.exceptions.ActorDiedError, ray.exceptions.ActorUnavailableError) as err:
                _raise_actor_failure(err, i, names, nodes, what)
    return results


def _last_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[-1][:300] if lines else type(err).__name__


def _raise_actor_failure(err: BaseException, i: int, names: list[str], nodes: list[str] | None, what: str,
                         cause: str = "") -> None:
    lost = _lost_nodes([nodes[i]] if nodes and len(nodes) == len(names) else [])
    where = f"; node {', '.join(lost)} is lost (its raylet is gone)" if lost else ""
    how = "died" if isinstance(err, ray.exceptions.ActorDiedError) else "died or became unreachable"
    then = f"; then {cause}" if cause else ""
    raise ActorFailure(f"{what}: {names[i]} {how} ({type(err).__name__}){where}{then}. Actors are not "
                       "restarted: resume from the last checkpoint (rerun the same command; "
                       "checkpoints.resume=auto)") from err


def _raise_dead_peer(pending: list, index: dict, names: list[str], nodes: list[str] | None, what: str, *,
                     cause: str) -> None:
    """Wait up to PEER_GRACE_S for Ray to report one of the `pending` actors dead (or its node lost) and raise
    ActorFailure naming it; return when every peer is still alive (the caller re-raises the original error)."""
    deadline = time.monotonic() + PEER_GRACE_S
    watch = list(pending)
    while watch and time.monotonic() < deadline:
        ready, watch = ray.wait(watch, num_returns=1, timeout=min(1.0, max(0.0, deadline - time.monotonic())))
        for ref in ready:
            try:
                ray.get(ref)
            except (ray.exceptions.ActorDiedError, ray.exceptions.ActorUnavailableError) as err:
                _raise_actor_failure(err, index[ref], names, nodes, what, cause)
            except ray.exceptions.RayTaskError:
                continue  # another consequence
        if nodes and len(nodes) == len(names):
            for ref in watch:
                if _lost_nodes([nodes[index[ref]]]):
                    raise ActorFailure(f"{what}: {names[index[ref]]} died; node {nodes[index[ref]]} is lost (its "
                                       f"raylet is gone); then {cause}. Actors are not restarted: resume from the "
                                       "last checkpoint (rerun the same command; checkpoints.resume=auto)")


def _bundle(num_cpus: float, num_gpus: float) -> dict[str, float]:
    return {k: v for k, v in (("CPU", num_cpus), ("GPU", num_gpus)) if v} or {"CPU": 0.001}


def _cluster_summary() -> str:
    nodes = [n for n in ray.nodes() if n["Alive"]]
    per_node = "; ".join(f"node {n['NodeManagerAddress']}: " + ", ".join(
        f"{k} {v:g}" for k, v in sorted(n["Resources"].items()) if k in ("CPU", "GPU")) for n in nodes)
    free = ", ".join(f"{k} {v:g}" for k, v in sorted(ray.available_resources().items()) if k in ("CPU", "GPU"))
    return f"{len(nodes)} alive node(s) ({per_node}); free now: {free or 'nothing'}"


def place(bundles: list[dict[str, float]], *, what: str, timeout_s: float, strategy: str = "PACK"):
    """A ready placement group of `bundles`, or StartupError within `timeout_s` (the group is removed again)."""
    pg = placement_group(bundles, strategy=strategy)
    try:
        ray.get(pg.ready(), timeout=timeout_s)
    except ray.exceptions.GetTimeoutError:
        summary = _cluster_summary()
        remove_placement_group(pg)
        asked = ", ".join(f"{b}" for b in bundles)
        raise StartupError(f"{what} could not be placed within {timeout_s:.0f}s (resources.startup_timeout_s): "
                           f"asked for {len(bundles)} bundle(s) {asked}; the cluster has {summary}. Lower the "
                           "per-actor resources or add nodes.") from None
    return pg


def bundle_node_ips(pg) -> list[str]:
    """The node address of each bundle of a ready placement group."""
    table = placement_group_table(pg)
    ips = _node_ips()
    return [ips.get(table["bundles_to_node_id"][i], "?") for i in range(len(table["bundles_to_node_id"]))]


def cause_line(err: BaseException) -> str:
    """One line for an actor's exception (a RayTaskError carries the original as `.cause`)."""
    cause = getattr(err, "cause", None) or err
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[0] if text else ''}"


class ActorGroup:
    """Actors of one kind, in order (rank r = actors[r]): fan-out calls and bounded, named waits."""

    def __init__(self, actors: list, names: list[str], *, timeout_s: float, infos: list[dict[str, Any]] | None = None,
                 placement_group=None, owns_placement_group: bool = False):
        self.actors = actors
        self.names = names
        self.infos = infos or [{} for _ in actors]
        self.timeout_s = timeout_s
        self.placement_group = placement_group
        self._owns_pg = owns_placement_group

    def __len__(self) -> int:
        return len(self.actors)

    @property
    def node_ips(self) -> list[str]:
        return [i.get("node_ip", "") for i in self.infos]

    def call(self, method: str, *args, **kwargs) -> list:
        """Fan a call out to every actor (same arguments); returns the object refs."""
        return [getattr(a, method).remote(*args, **kwargs) for a in self.actors]

    def call_sharded(self, method: str, shards: list[tuple], **kwargs) -> list:
        """Actor r gets `*shards[r]`."""
        return [getattr(a, method).remote(*s, **kwargs) for a, s in zip(self.actors, shards)]

    def get(self, refs: list, what: str, *, ranks: list[int] | None = None, timeout_s: float | None = None) -> list:
        """Results of refs from actors `ranks` (default: one ref per actor, in order), within the call timeout."""
        ranks = list(range(len(refs))) if ranks is None else ranks
        return get_all(refs, timeout_s=timeout_s or self.timeout_s, what=what,
                       names=[self.names[r] for r in ranks], nodes=[self.node_ips[r] for r in ranks])

    def subset(self, ranks: list[int]) -> ActorGroup:
        """A view of some of the actors (same handles; killing the view does not kill them)."""
        return ActorGroup([self.actors[r] for r in ranks], [self.names[r] for r in ranks], timeout_s=self.timeout_s,
                          infos=[self.infos[r] for r in ranks])

    def kill(self) -> None:
        for a in self.actors:
            ray.kill(a, no_restart=True)
        if self._owns_pg and self.placement_group is not None:
            remove_placement_group(self.placement_group)
            self.placement_group = None

    def _start(self, kind: str, make, count: int, bundles: list[dict[str, float]], *, placement_group,
               bundle_offset: int, startup_timeout_s: float) -> None:
        """Place `count` actors (`make(i, options)` creates actor i) and name them by bundle node."""
        if placement_group is None:
            placement_group = place(bundles, what=f"{count} {kind}(s)", timeout_s=startup_timeout_s)
            self._owns_pg, bundle_offset = True, 0
        self.placement_group = placement_group
        nodes = bundle_node_ips(placement_group)[bundle_offset:bundle_offset + count]
        self.actors = [make(i, {"scheduling_strategy": PlacementGroupSchedulingStrategy(
            placement_group, placement_group_bundle_index=bundle_offset + i)}) for i in range(count)]
        self.names = [f"{kind} {i} (node {node})" for i, node in enumerate(nodes)]
        self.infos = [{"node_ip": node} for node in nodes]

    def _identify(self, kind: str, what: str, timeout_s: float) -> None:
        self.infos = self.get(self.call("info"), what, timeout_s=timeout_s)
        self.names = [f"{kind} {i} (pid {info['pid']}, node {info['node_ip']})" for i, info in enumerate(self.infos)]


class LearnerGroup(ActorGroup):
    """`world_size` learner ranks forming one torch.distributed group at rank 0's node address. The constructor
    places the ranks and forms the group; `build()` loads the models."""

    def __init__(self, cfg_dict: dict[str, Any], *, world_size: int, num_cpus: float, num_gpus: float,
                 threads: int, timeout_s: float, startup_timeout_s: float, master_addr: str | None = None,
                 master_port: int | None = None, placement_group=None, bundle_offset: int = 0):
        super().__init__([], [], timeout_s=timeout_s)
        remote_cls = ray.remote(Learner)

        def make(rank: int, opts: dict[str, Any]):
            return remote_cls.options(num_cpus=num_cpus, num_gpus=num_gpus, runtime_env=_env(threads),
                                      max_restarts=0, max_concurrency=1, **opts).remote(cfg_dict, rank, world_size)

        self._start("learner rank", make, world_size, [_bundle(num_cpus, num_gpus)] * world_size,
                    placement_group=placement_group, bundle_offset=bundle_offset, startup_timeout_s=startup_timeout_s)
        try:
            self._identify("learner rank", "starting learner actors", startup_timeout_s)
            ip, port = self.get([self.actors[0].rendezvous_address.remote()], "rendezvous address of rank 0",
                                ranks=[0], timeout_s=startup_timeout_s)[0]
        except ActorFailure as err:
            raise StartupError(str(err)) from err
        self.master_addr, self.master_port = master_addr or ip, master_port or port
        where = f"{self.master_addr}:{self.master_port}"
        log.info("learners: %s; rendezvous at %s", ", ".join(self.names), where)
        refs = self.call("join", self.master_addr, self.master_port, startup_timeout_s, timeout_s)
        try:
            self.get(refs, f"forming the learners' torch.distributed group at {where}",
                     timeout_s=startup_timeout_s + RENDEZVOUS_MARGIN_S)
        except ray.exceptions.RayTaskError as err:
            who = getattr(err, "actor_name", "a learner rank")
            raise StartupError(f"{who} could not join the learners' group at {where}: {cause_line(err)}") from None
        except ActorFailure as err:
            if err.__cause__ is not None:  # an actor died
                raise StartupError(f"{err} (rendezvous address {where})") from err
            raise StartupError(f"{', '.join(err.waiting)} did not join the learners' torch.distributed group at "
                               f"{where} within {startup_timeout_s + RENDEZVOUS_MARGIN_S:.0f}s (resources."
                               f"startup_timeout_s={startup_timeout_s:g}): is {where} reachable from every "
                               "learner's node?") from None

    def build(self) -> None:
        """Load the policy, reference and critic on every rank (bounded by the call timeout)."""
        self.get(self.call("build"), "loading the learners' models")


class GeneratorGroup(ActorGroup):
    """`count` generator actors, each its own engine (vLLM or HF), placed like the learners."""

    def __init__(self, model: str, gen_cfg, *, count: int, max_model_len: int, seed: int, timeout_s: float,
                 startup_timeout_s: float, placement_group=None, bundle_offset: int = 0,
                 reference_micro_batch_size: int | None = None):
        super().__init__([], [], timeout_s=timeout_s)
        remote_cls = ray.remote(Generator)

        def make(i: int, opts: dict[str, Any]):
            return remote_cls.options(
                num_cpus=gen_cfg.num_cpus, num_gpus=gen_cfg.num_gpus, max_restarts=0,
                runtime_env=_env(gen_cfg.threads, {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}), **opts).remote(
                model, backend=gen_cfg.backend, max_model_len=max_model_len, max_num_seqs=gen_cfg.max_num_seqs,
                kv_cache_memory_bytes=gen_cfg.kv_cache_memory_bytes,
                gpu_memory_utilization=gen_cfg.gpu_memory_utilization, seed=seed + i, threads=gen_cfg.threads,
                dtype=gen_cfg.dtype, reference_micro_batch_size=reference_micro_batch_size)

        self._start("generator", make, count, [_bundle(gen_cfg.num_cpus, gen_cfg.num_gpus)] * count,
                    placement_group=placement_group, bundle_offset=bundle_offset, startup_timeout_s=startup_timeout_s)
        # the constructors load the model (vLLM: also the engine): bounded by the call timeout
        self._identify("generator", "starting generators (loading the model)", timeout_s)


def colocated_placement_group(num_learners: int, learner_res: dict[str, float], num_generators: int,
                              gen_res: dict[str, float], *, timeout_s: float):
    """One placement group holding every actor's bundle, packed (shares nodes/GPUs when colocated)."""
    bundles = [_bundle(learner_res.get("CPU", 0), learner_res.get("GPU", 0))] * num_learners
    bundles += [_bundle(gen_res.get("CPU", 0), gen_res.get("GPU", 0))] * num_generators
    return place(bundles, what=f"{num_learners} learner rank(s) and {num_generators} generator(s), colocated",
                 timeout_s=timeout_s)


def check_shared_folder(folder: Path, learners: LearnerGroup, *, timeout_s: float) -> None:
    """Every learner rank must see `folder` as the driver does: checkpoints are written by every rank (DeepSpeed
    state) and rank 0 (the HF model) into it, and sealed by the driver. The driver writes a nonce file there;
    each rank reads it back on its own node."""
    folder = Path(folder).resolve()
    nonce = uuid.uuid4().hex
    probe = folder / f".rlvr-shared-check-{nonce}"
    probe.write_text(nonce)
    try:
        seen = learners.get(learners.call("read_text", str(probe)), f"checking output_dir {folder} on every learner",
                            timeout_s=timeout_s)
    finally:
        probe.unlink(missing_ok=True)
    blind = [name for name, text in zip(learners.names, seen) if text != nonce]
    if blind:
        raise StartupError(
            f"output_dir {folder} is not the same folder on every node: {', '.join(blind)} cannot read the file "
            f"{probe.name} the driver wrote there (driver on node {ray.util.get_node_ip_address()}). Every learner "
            "rank writes its part of each checkpoint into output_dir and the driver seals it, so with learners on "
            "other nodes than the driver output_dir must be on a filesystem all of them share (NFS, a mounted "
            "bucket), given as an absolute path (see docs/ray_job.md)")


def confirm_checkpoint_parts(path: Path, learners: LearnerGroup, *, timeout_s: float, poll_s: float = 0.5) -> None:
    """A checkpoint is complete only when every rank's part is written *and* the driver, which seals it, sees
    it: each rank lists the files it sees under `path` once every rank's save returned; the driver waits (shared
    filesystems may show other nodes' files late) until it sees each of them at that size, else `ActorFailure`
    naming the rank and file (the checkpoint is then never sealed)."""
    views = learners.get(learners.call("list_files", str(path)), "listing the checkpoint's files")
    expected: dict[str, tuple[int, str]] = {}
    for name, files in zip(learners.names, views):
        for rel, size in files:
            expected.setdefault(rel, (size, name))
    deadline = time.monotonic() + timeout_s
    while True:
        missing = [(rel, size, name) for rel, (size, name) in sorted(expected.items())
                   if not (path / rel).is_file() or (path / rel).stat().st_size != size]
        if not missing:
            return
        if time.monotonic() > deadline:
            rel, size, name = missing[0]
            raise ActorFailure(f"checkpoint {path}: {len(missing)} file(s) written by the learners are not visible "
                               f"from the driver after {timeout_s:.0f}s, e.g. {rel} ({size} bytes, seen by {name}); "
                               "output_dir must be one folder shared by every node (docs/ray_job.md)")
        time.sleep(poll_s)
