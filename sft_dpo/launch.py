"""How a stage gets its ranks (the command line is sft_dpo.cli).

Distributed runs (one way, three entrances):
  * `dist.world_size: 1` (default): this process is rank 0 of a one-rank gloo/NCCL group.
  * `dist.world_size: N > 1` and no launcher: this process spawns N local worker processes
    (torch.multiprocessing, "spawn"), each joining one group on `dist.master_addr` and a free port (gloo on CPU,
    NCCL on CUDA with one GPU per rank). The parent waits and returns rank 0's result.
  * Under a launcher (`torchrun --nproc_per_node N -m rlvr.cli sft ...`, the `deepspeed` launcher, or Ray actors
    that set RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT): every process joins that group; the
    launcher's WORLD_SIZE wins over `dist.world_size` (a mismatch is logged). Multi-node = a launcher.
A process group of more than one rank that already exists (e.g. Ray learner actors) is used as is; a one-rank
group left by an earlier in-process run does not stop `dist.world_size > 1` from spawning.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from transformers import AutoTokenizer

from core.device import default_threads, detect_device, set_threads
from core.engine import free_port, init_distributed
from core.logging import get_logger
from core.models import resolve_model
from core.preflight import preflight_stage
from core.run import TrainResult
from core.runlock import RunLock
from sft_dpo.trainer import RunContext, finished_result, train

log = get_logger(__name__)


def _make_objective(path: str, cfg):
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)(cfg)


def _run_rank(cfg, objective_path: str, rank: int, world: int, local_rank: int, master_addr: str,
              master_port: int, threads: int | None) -> TrainResult:
    device = detect_device(cfg.engine.device, threads)
    if device.kind == "cpu":
        set_threads(device.num_threads)
    else:
        torch.cuda.set_device(local_rank)
    init_distributed(rank, world, master_addr=master_addr, master_port=master_port, device=device,
                     local_rank=local_rank)
    model_path = resolve_model(cfg.model)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    ctx = RunContext(cfg=cfg, rank=rank, world_size=world, device=device, model_path=model_path,
                     tokenizer=tokenizer, out=Path(cfg.output_dir))
    return train(ctx, _make_objective(objective_path, cfg))


def _spawned(local_rank: int, cfg, objective_path: str, world: int, master_addr: str, master_port: int,
             threads: int) -> None:
    _run_rank(cfg, objective_path, local_rank, world, local_rank, master_addr, master_port, threads)


def run_stage(cfg, objective_path: str) -> TrainResult:
    """Run a stage with the ranks `cfg.dist` and the environment ask for (see module docstring). Unless the stage
    finished already, its inputs are checked first (core.preflight: one-line errors, exit 2) and the process that
    owns the run (rank 0, or the parent of spawned ranks) holds the run folder's lock (core.runlock)."""
    out = Path(cfg.output_dir)
    done = finished_result(out)
    if done is not None:
        return done
    preflight_stage(cfg, model_path=resolve_model(cfg.model))
    if int(os.environ.get("RANK", "0")) != 0:  # a launcher's other ranks: rank 0 holds the lock
        return _run_stage(cfg, objective_path)
    with RunLock(out):
        return _run_stage(cfg, objective_path)


def _run_stage(cfg, objective_path: str) -> TrainResult:
    out = Path(cfg.output_dir)
    existing = dist.is_available() and dist.is_initialized()
    if existing and dist.get_world_size() > 1:  # e.g. inside Ray learner actors or a launcher-started process
        rank, world = dist.get_rank(), dist.get_world_size()
        return _run_rank(cfg, objective_path, rank, world, int(os.environ.get("LOCAL_RANK", rank)),
                         os.environ.get("MASTER_ADDR", "127.0.0.1"), int(os.environ.get("MASTER_PORT", 0)),
                         cfg.engine.num_threads)
    env_world = int(os.environ.get("WORLD_SIZE", "1"))
    if env_world > 1 and not existing:  # a launcher started us
        if env_world != cfg.dist.world_size:
            log.warning("launcher WORLD_SIZE=%d differs from dist.world_size=%d; using the launcher's",
                        env_world, cfg.dist.world_size)
        return _run_rank(cfg, objective_path, int(os.environ["RANK"]), env_world,
                         int(os.environ.get("LOCAL_RANK", os.environ["RANK"])), os.environ["MASTER_ADDR"],
                         int(os.environ["MASTER_PORT"]), cfg.engine.num_threads)
    world = cfg.dist.world_size
    port = cfg.dist.master_port or free_port()
    if world == 1:
        return _run_rank(cfg, objective_path, 0, 1, 0, cfg.dist.master_addr, port, cfg.engine.num_threads)
    done = finished_result(out)
    if done is not None:
        return done
    threads = cfg.engine.num_threads or max(1, default_threads() // world)
    log.info("spawning %d local ranks (%d threads each) on %s:%d", world, threads, cfg.dist.master_addr, port)
    mp.start_processes(_spawned, args=(cfg, objective_path, world, cfg.dist.master_addr, port, threads),
                       nprocs=world, join=True, start_method="spawn")
    done = finished_result(out)
    if done is None:  # stopped early (stop_after_steps): no final model yet
        return TrainResult(output_dir=out, model_dir=out / "final", steps=cfg.stop_after_steps or 0)
    return done
