"""The Ray layer: place learner ranks and generators, wire their addresses, fan out calls. Only placement and
wiring live here; the logic is in the plain classes `Learner` and `Generator` (STYLE.md #2).

Every wait is bounded (`call_timeout_s`): a dead actor surfaces as `ActorFailure` naming the actor and its pid
within seconds (Ray reports a killed actor's pending calls as failed at once), a hung one after the timeout.
"""

from __future__ import annotations

import os
from typing import Any

import ray

from rlvr.utils.logging import get_logger

log = get_logger(__name__)


class ActorFailure(RuntimeError):
    """A generator or learner actor died or stopped answering; the run cannot continue (resume from the last
    checkpoint)."""


def _env(threads: int, extra: dict[str, str] | None = None) -> dict[str, Any]:
    env = {"OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false", "RAY_DEDUP_LOGS": "0"}
    for key in ("DS_ACCELERATOR", "RLVR_CACHE", "HF_HOME", "TORCH_EXTENSIONS_DIR", "PYTHONPATH"):
        if key in os.environ:
            env[key] = os.environ[key]
    env.update(extra or {})
    return {"env_vars": env}


def get_all(refs: list, *, timeout_s: float, what: str, names: list[str] | None = None) -> list:
    """ray.get with a deadline, turning actor death and timeouts into `ActorFailure` with a clear message.
    `names[i]` names the actor behind `refs[i]` (used to say which one died)."""
    try:
        return ray.get(refs, timeout=timeout_s)
    except ray.exceptions.GetTimeoutError:
        raise ActorFailure(f"{what}: no answer within {timeout_s:.0f}s; an actor is hung or starved of CPU") from None
    except (ray.exceptions.ActorDiedError, ray.exceptions.ActorUnavailableError) as err:
        dead = []
        if names and len(names) == len(refs):
            for ref, name in zip(refs, names):
                try:
                    ray.get(ref, timeout=0.1)
                except (ray.exceptions.ActorDiedError, ray.exceptions.ActorUnavailableError):
                    dead.append(name)
                except (ray.exceptions.GetTimeoutError, ray.exceptions.RayTaskError):
                    pass
        who = ", ".join(dead) if dead else "an actor"
        raise ActorFailure(f"{what}: {who} died ({type(err).__name__}). Actors are not restarted: resume from "
                           "the last checkpoint (rerun the same command; train.resume=auto)") from err


class LearnerGroup:
    """`world_size` learner ranks forming one torch.distributed group (rank 0's address handed to all)."""

    def __init__(self, cfg_dict: dict[str, Any], *, world_size: int, num_cpus: float, num_gpus: float,
                 threads: int, master_addr: str, timeout_s: float, placement_group=None, bundle_offset: int = 0):
        from rlvr.actors.learner import Learner
        from sft_dpo.engine import free_port

        self.timeout_s = timeout_s
        port = free_port()
        remote_cls = ray.remote(Learner)
        self.actors = []
        for rank in range(world_size):
            opts: dict[str, Any] = dict(num_cpus=num_cpus, num_gpus=num_gpus, runtime_env=_env(threads),
                                        max_restarts=0, max_concurrency=1)
            if placement_group is not None:
                from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

                opts["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
                    placement_group, placement_group_bundle_index=bundle_offset + rank)
            self.actors.append(remote_cls.options(**opts).remote(cfg_dict, rank, world_size, master_addr, port))
        self.names = [f"learner rank {r}" for r in range(world_size)]
        self.infos = self.get(self.call("info"), "starting learners")

    def call(self, method: str, *args, **kwargs) -> list:
        """Fan a call out to every rank (same arguments); returns the object refs."""
        return [getattr(a, method).remote(*args, **kwargs) for a in self.actors]

    def call_sharded(self, method: str, shards: list[tuple], **kwargs) -> list:
        """Rank r gets `*shards[r]`."""
        return [getattr(a, method).remote(*s, **kwargs) for a, s in zip(self.actors, shards)]

    def get(self, refs: list, what: str) -> list:
        """Results of one fanned-out call (one ref per rank, in rank order)."""
        return get_all(refs, timeout_s=self.timeout_s, what=what, names=self.names)


def start_generators(model: str, gen_cfg, *, count: int, max_model_len: int, seed: int, timeout_s: float,
                     placement_group=None, bundle_offset: int = 0) -> tuple[list, list[dict[str, Any]]]:
    """Start `count` generator actors (each its own engine); returns handles and their info (pid, backend)."""
    from rlvr.actors.generator import Generator

    remote_cls = ray.remote(Generator)
    actors = []
    for i in range(count):
        opts: dict[str, Any] = dict(num_cpus=gen_cfg.num_cpus, num_gpus=gen_cfg.num_gpus, max_restarts=0,
                                    runtime_env=_env(gen_cfg.threads, {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}))
        if placement_group is not None:
            from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

            opts["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
                placement_group, placement_group_bundle_index=bundle_offset + i)
        actors.append(remote_cls.options(**opts).remote(
            model, backend=gen_cfg.backend, max_model_len=max_model_len, max_num_seqs=gen_cfg.max_num_seqs,
            kv_cache_memory_bytes=gen_cfg.kv_cache_memory_bytes, gpu_memory_utilization=gen_cfg.gpu_memory_utilization,
            seed=seed + i, threads=gen_cfg.threads))
    names = [f"generator {i}" for i in range(count)]
    infos = get_all([a.info.remote() for a in actors], timeout_s=timeout_s, what="starting generators", names=names)
    return actors, infos


def colocated_placement_group(num_learners: int, learner_res: dict[str, float], num_generators: int,
                              gen_res: dict[str, float]):
    """One placement group holding every actor's bundle, packed (shares nodes/GPUs when colocated)."""
    from ray.util.placement_group import placement_group

    bundles = [{k: v for k, v in learner_res.items() if v} or {"CPU": 0.001}] * num_learners
    bundles += [{k: v for k, v in gen_res.items() if v} or {"CPU": 0.001}] * num_generators
    pg = placement_group(bundles, strategy="PACK")
    ray.get(pg.ready(), timeout=600)
    return pg
