"""`rlvr train --config FILE [a.b=value ...]`: the RLVR stage (PPO or GRPO/RLOO with verifiable rewards) on Ray.

Ray: connects to $RAY_ADDRESS when set (what `ray job submit` gives the entrypoint), else starts a local Ray with
`ray.init(num_cpus=..., include_dashboard=False)` and stops it at the end. Entry point for code:
`rlvr.driver.train(cfg) -> TrainResult` (the pipeline and the sweep call it).

As a Ray job: `ray job submit --address http://HEAD:8265 --working-dir . -- rlvr train --config configs/...`.
The job's runtime environment must have this package and its dependencies importable on every node (install it
into the cluster's Python, or pass `--runtime-env-json '{"pip": [...]}'`); `--working-dir .` ships the configs.
Relative paths in the config (output_dir, data files) resolve against the job's working directory.

On a cluster of several nodes: learners and generators go wherever Ray places them; the learners' group and the
weight-sync group meet at learner rank 0's node address, and output_dir must be a folder every node shares
(checked at start). See docs/ray_job.md.

Exit codes: 0 success; 1 the run could not start (actors not placed, a group not formed within
resources.startup_timeout_s) or stopped (actor or node lost, weight sync failed, reward error budget exceeded, a
non-finite loss/grad norm/weight — the message says which, the last checkpoint is intact); 2 bad config or data, an
unusable input found by the preflight (model, data file, output_dir), no usable checkpoint to resume, output_dir in
use by another run, no space left to save.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from core.checkpoint import DiskFullError, ResumeError
from core.config import ConfigError, load_config
from core.logging import get_logger
from core.metrics import read_metrics
from core.models import resolve_model
from core.preflight import PreflightError, preflight_rlvr
from core.run import TrainResult
from core.runlock import RunLock, RunLockedError
from rewards.registry import UnknownVerifierError
from rlvr.config import RLVRConfig
from rlvr.data.prompts import PromptDataError
from rlvr.errors import ActorFailure, StartupError, TrainingStopped, WeightSyncError
from rlvr.local_ray import start_local_ray

log = get_logger(__name__)


def _ray_cpus_needed(cfg: RLVRConfig) -> int:
    need = cfg.dist.world_size * cfg.resources.learner_num_cpus
    need += cfg.generation.num_generators * cfg.generation.num_cpus
    return max(int(need + 0.999), 1)


def connect_ray(cfg: RLVRConfig) -> bool:
    """Connect to (or start) Ray. Returns True when this call started a local Ray that we must shut down."""
    import ray  # lazy: see train()

    if ray.is_initialized():
        return False
    env = {"env_vars": {"TOKENIZERS_PARALLELISM": "false"}}
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=True)
        nodes = sorted(n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"])
        log.info("connected to Ray at %s: %d node(s) %s; this driver on %s", os.environ["RAY_ADDRESS"], len(nodes),
                 nodes, ray.util.get_node_ip_address())
        return False
    num_cpus = cfg.resources.ray_num_cpus or max(_ray_cpus_needed(cfg), os.cpu_count() or 1)
    # on 127.0.0.1 only, and ended by a watchdog if this driver dies without shutting it down
    start_local_ray(num_cpus=num_cpus, include_dashboard=False, runtime_env=env, log_to_driver=True)
    log.info("started a local Ray with %d CPUs", num_cpus)
    return True


def train(cfg: RLVRConfig) -> TrainResult:
    """Run (or resume) the RLVR stage described by `cfg`."""
    # lazy: Ray, torch and transformers take seconds to import; `rlvr train --help`, a bad config and the
    # preflight's one-line errors come without them
    import ray
    import torch

    from rlvr.trainer import RLVRTrainer

    os.environ.setdefault("DS_ACCELERATOR", "cuda" if torch.cuda.is_available() else "cpu")
    cfg = cfg.replace(model=resolve_model(cfg.model))
    preflight_rlvr(cfg)  # model, data files, output_dir and its free space: one-line errors, before Ray starts
    with RunLock(cfg.output_dir):  # one writer per run folder
        trainer = RLVRTrainer(cfg)  # loads and validates the prompts first: bad data fails before Ray starts
        trainer.plan_resume()  # the checkpoint to resume from (checked, same data), before Ray starts
        started = False
        try:
            started = connect_ray(cfg)
            trainer.start_actors()
            return trainer.run()
        finally:
            trainer.stop_actors()
            if started:
                ray.shutdown()


def summary_table(result: TrainResult, history: list[dict]) -> str:
    """A short end-of-run table: reward and timing at the start and end, and where things were written."""
    def fmt(v):
        return f"{v:.4g}" if isinstance(v, (int, float)) else str(v)

    def interval(h):
        text = fmt(h["eval/reward/mean"])
        if "eval/reward/mean_ci95_low" in h:
            text += f" [{h['eval/reward/mean_ci95_low']:.2f}, {h['eval/reward/mean_ci95_high']:.2f}]"
        return text

    rows = []
    start = next((h for h in history if h["step"] == 0), {})
    history = [h for h in history if h["step"] > 0]
    held_out = None
    if "eval/reward/mean" in start and history and "eval/reward/mean" in history[-1]:
        end = history[-1]
        n = end.get("eval/prompts")
        held_out = (f"held-out reward (greedy{f', {n:g} prompts' if n else ''}; 95% interval): "
                    f"{interval(start)} -> {interval(end)}")
    if history:
        first, last = history[0], history[-1]
        for key in ("reward/mean", "eval/reward/mean", "response/length_mean", "response/finished_fraction",
                    "kl/sequence_mean", "policy/loss", "time/step_s"):
            if key in last:
                begin = start if key.startswith("eval/") and key in start else first
                rows.append((key, fmt(begin.get(key, "")), fmt(last[key])))
    width = max([len(r[0]) for r in rows] + [20])
    lines = [f"{'metric':<{width}}  {'start':>12}  {'end':>12}"]
    lines += [f"{k:<{width}}  {a:>12}  {b:>12}" for k, a, b in rows]
    if held_out:
        lines.append(held_out)
    lines += [f"steps: {result.steps}", f"final model: {result.model_dir}",
              f"metrics: {result.output_dir / 'metrics.jsonl'}", f"curves: {result.output_dir / 'curves.png'}"]
    return "\n".join(lines)


# ---- CLI ----

def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="YAML config (see configs/rlvr/)")
    parser.add_argument("overrides", nargs="*", help="KEY.PATH=VALUE overrides, e.g. train.total_steps=4")


def cli_main(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(RLVRConfig, args.config, args.overrides)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        result = train(cfg)
    except (ConfigError, PromptDataError, UnknownVerifierError, PreflightError, ResumeError, RunLockedError,
            DiskFullError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except StartupError as err:
        print(f"error: the run could not start: {err}", file=sys.stderr)
        return 1
    except (ActorFailure, TrainingStopped, WeightSyncError) as err:
        print(f"error: the run stopped: {err}", file=sys.stderr)
        return 1
    history = read_metrics(Path(cfg.output_dir)) if (Path(cfg.output_dir) / "metrics.jsonl").is_file() else []
    print(summary_table(result, history))
    return 0
