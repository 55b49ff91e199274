"""`rlvr sweep`: the SmolTulu experiment — learning rate x effective batch size for one stage, each trial trained
and then evaluated — on Ray Tune (local, or the cluster at $RAY_ADDRESS / `ray_address`).

Outputs in `output_dir`: `results.csv` (one row per trial: lr, effective batch, lr/bs ratio, every eval metric),
`contour_<task>.png` (the task's score over log LR x log batch size) and `ratio.png` (each task's score against
the LR/BS ratio: the paper's finding is that reasoning tasks prefer a higher ratio, pattern tasks a lower one).

The effective batch is realised by gradient accumulation: accumulation = batch / (per-device batch x world size),
which must divide exactly (the trial is rejected up front otherwise), so per-device memory stays the same.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import random
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from core.config import ConfigError, FrozenConfig, load_config
from core.logging import get_logger
from rlvr.eval import evaluate
from rlvr.pipeline import RUNNERS, StageKind, _import

log = get_logger(__name__)

# The score plotted per task: the first of these keys that the evaluation returns.
PRIMARY_METRICS = {
    "gsm8k": ("accuracy", "exact_match", "acc"),
    "ifeval": ("prompt_level_loose", "prompt_level_strict", "inst_level_loose"),
    "arc_easy": ("acc_norm", "acc", "accuracy"),
    "arc_challenge": ("acc_norm", "acc", "accuracy"),
    "hellaswag": ("acc_norm", "acc", "accuracy"),
}


class SweepEvalConfig(FrozenConfig):
    tasks: list[str] = Field(default_factory=lambda: ["gsm8k", "ifeval", "arc_easy", "arc_challenge", "hellaswag"])
    limit: int | None = Field(100, ge=1, description="examples per task (None: all)")
    data_dir: str | None = Field(None, description="local data folder (default: ../shared/data if present, else hub)")
    backend: Literal["auto", "vllm", "hf"] = "auto"
    max_new_tokens: int = Field(256, ge=1)


class SweepConfig(FrozenConfig):
    stage: StageKind = Field(description="which stage each trial trains: sft, dpo, rm or rlvr")
    config: str = Field(description="the stage's base YAML config")
    overrides: list[str] = Field(default_factory=list, description="overrides applied to every trial")
    output_dir: str
    learning_rates: list[float] = Field(min_length=1)
    effective_batch_sizes: list[int] = Field(min_length=1)
    search: Literal["grid", "random"] = Field("grid", description="grid: every pair; random: num_samples pairs "
                                              "with log-uniform LR in [min, max] and a batch size from the list")
    num_samples: int = Field(8, ge=1, description="random search only")
    seed: int = 0
    eval: SweepEvalConfig = SweepEvalConfig()
    cpus_per_trial: float = Field(1.0, gt=0)
    gpus_per_trial: float = Field(0.0, ge=0)
    max_concurrent_trials: int = Field(1, ge=1)
    ray_address: str | None = Field(None, description="cluster address; default $RAY_ADDRESS, else a local Ray")

    @model_validator(mode="after")
    def _positive(self) -> SweepConfig:
        if any(lr <= 0 for lr in self.learning_rates) or any(b <= 0 for b in self.effective_batch_sizes):
            raise ValueError("learning rates and batch sizes must be positive")
        return self


def trial_points(cfg: SweepConfig) -> list[tuple[float, int]]:
    if cfg.search == "grid":
        return list(itertools.product(cfg.learning_rates, cfg.effective_batch_sizes))
    rng = random.Random(cfg.seed)
    lo, hi = math.log(min(cfg.learning_rates)), math.log(max(cfg.learning_rates))
    return [(math.exp(rng.uniform(lo, hi)), rng.choice(cfg.effective_batch_sizes)) for _ in range(cfg.num_samples)]


def trial_overrides(cfg: SweepConfig, stage_cfg: Any, lr: float, batch: int, out: Path) -> list[str]:
    """Overrides that give a trial its LR and effective batch and its own folder. SFT/DPO/RM: the batch comes from
    gradient accumulation. RLVR: the effective batch of one optimiser step is the rollout batch divided by
    ppo.num_mini_batches (accumulation is derived there), so the trial sets num_mini_batches."""
    if cfg.stage == "rlvr":
        rollout = stage_cfg.rollout_batch_size
        if rollout % batch:
            raise ConfigError(f"effective batch {batch} does not divide the rollout batch {rollout} "
                              f"(prompts_per_step x samples_per_prompt, from {cfg.config})")
        return [*cfg.overrides, f"optim.lr={lr!r}", f"ppo.num_mini_batches={rollout // batch}", f"output_dir={out}"]
    per_device = stage_cfg.optim.per_device_batch_size
    world = stage_cfg.dist.world_size
    if batch % (per_device * world):
        raise ConfigError(f"effective batch {batch} is not a multiple of per_device_batch_size {per_device} x "
                          f"world_size {world} (from {cfg.config})")
    return [*cfg.overrides, f"optim.lr={lr!r}", f"optim.gradient_accumulation_steps={batch // (per_device * world)}",
            f"output_dir={out}"]


def trial_dir(cfg: SweepConfig, lr: float, batch: int) -> Path:
    return Path(cfg.output_dir).resolve() / "trials" / f"lr{lr:.3g}_bs{batch}"


def run_trial(cfg: SweepConfig, lr: float, batch: int) -> dict[str, Any]:
    """Train one (lr, batch) point and evaluate it; returns a flat row of results."""
    runner = RUNNERS[cfg.stage]
    config_class = _import(runner.config_class)
    base = load_config(config_class, cfg.config, cfg.overrides)
    out = trial_dir(cfg, lr, batch)
    stage_cfg = load_config(config_class, cfg.config, trial_overrides(cfg, base, lr, batch, out))
    result = _import(runner.train_fn)(stage_cfg)
    scores = evaluate(str(result.model_dir), cfg.eval.tasks, limit=cfg.eval.limit, data_dir=cfg.eval.data_dir,
                      backend=cfg.eval.backend, max_new_tokens=cfg.eval.max_new_tokens)
    row: dict[str, Any] = {"lr": lr, "effective_batch_size": batch, "lr_bs_ratio": lr / batch,
                           "model_dir": str(result.model_dir), "train_steps": result.steps}
    for task, metrics in scores.items():
        for name, value in metrics.items():
            if isinstance(value, (int, float)):
                row[f"{task}/{name}"] = value
    return row


def _tune_trainable(params: dict[str, Any], *, sweep: dict[str, Any], cwd: str) -> None:
    # lazy: Ray Tune takes seconds; `rlvr sweep --help` and config errors come without it
    from ray import tune

    os.chdir(cwd)  # Tune starts trials in their own folder; configs name paths relative to the user's
    cfg = SweepConfig.model_validate(sweep)
    point = params["point"]
    tune.report(run_trial(cfg, point["lr"], point["effective_batch_size"]))


def run_sweep(cfg: SweepConfig) -> Path:
    """Run every trial on Ray Tune, then write results.csv and the plots. Returns the CSV path."""
    import pandas as pd  # lazy: see _tune_trainable
    import ray

    out = Path(cfg.output_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    points = trial_points(cfg)
    # Validate every trial's config before anything trains.
    config_class = _import(RUNNERS[cfg.stage].config_class)
    base = load_config(config_class, cfg.config, cfg.overrides)
    for lr, batch in points:
        load_config(config_class, cfg.config, trial_overrides(cfg, base, lr, batch, trial_dir(cfg, lr, batch)))
    log.info("sweep: %d trials of %s (%s search)", len(points), cfg.stage, cfg.search)

    address = cfg.ray_address or os.environ.get("RAY_ADDRESS")
    started = False
    if not ray.is_initialized():
        if address:
            ray.init(address=address)
        else:
            # An RLVR trial starts its own actors on this Ray: declare enough CPUs for them too.
            ray.init(num_cpus=max(2, math.ceil(cfg.cpus_per_trial * cfg.max_concurrent_trials) + 2),
                     include_dashboard=False, runtime_env={"env_vars": {"TOKENIZERS_PARALLELISM": "false"}})
            started = True
    try:
        rows = _fit(cfg, points, out)
    finally:
        if started:
            ray.shutdown()
    frame = pd.DataFrame(rows).sort_values(["lr", "effective_batch_size"])
    first = ["lr", "effective_batch_size", "lr_bs_ratio"]
    frame = frame[first + [c for c in frame.columns if c not in first]]
    csv = out / "results.csv"
    frame.to_csv(csv, index=False)
    plot_results(frame, out, cfg.eval.tasks)
    print(frame.to_string(index=False))
    log.info("sweep results in %s", csv)
    return csv


def _fit(cfg: SweepConfig, points: list[tuple[float, int]], out: Path) -> list[dict[str, Any]]:
    from ray import tune  # lazy: see _tune_trainable

    trainable = tune.with_parameters(_tune_trainable, sweep=cfg.model_dump(mode="json"), cwd=os.getcwd())
    trainable = tune.with_resources(trainable, {"cpu": cfg.cpus_per_trial, "gpu": cfg.gpus_per_trial})
    # One grid axis of (lr, batch) pairs: the points are already the product (grid) or the random draws.
    space = {"point": tune.grid_search([{"lr": lr, "effective_batch_size": b} for lr, b in points])}
    tuner = tune.Tuner(
        trainable,
        param_space=space,
        tune_config=tune.TuneConfig(max_concurrent_trials=cfg.max_concurrent_trials),
        run_config=tune.RunConfig(name="tune", storage_path=str(out), verbose=1),
    )
    grid = tuner.fit()
    rows = []
    for result in grid:
        if result.error is not None:
            raise RuntimeError(f"sweep trial {result.config['point']} failed: {result.error}") from result.error
        rows.append({k: v for k, v in result.metrics.items() if _is_result_key(k)})
    return rows


def _is_result_key(key: str) -> bool:
    if key in ("lr", "effective_batch_size", "lr_bs_ratio", "model_dir", "train_steps"):
        return True
    return "/" in key and not key.startswith("config/")


def primary_metric(frame, task: str) -> str | None:
    for name in PRIMARY_METRICS.get(task, ()):
        if f"{task}/{name}" in frame.columns:
            return f"{task}/{name}"
    candidates = [c for c in frame.columns if c.startswith(f"{task}/")]
    return candidates[0] if candidates else None


def plot_results(frame, out: Path, tasks: list[str]) -> list[Path]:
    """contour_<task>.png per task (heat map when the grid is too small to contour) and ratio.png."""
    import matplotlib  # lazy: a second to import, and only drawn once the sweep is done

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    written = []
    columns = [(t, primary_metric(frame, t)) for t in tasks]
    columns = [(t, c) for t, c in columns if c is not None]
    for task, col in columns:
        table = frame.pivot_table(index="effective_batch_size", columns="lr", values=col, aggfunc="mean")
        fig, ax = plt.subplots(figsize=(5.5, 4.5))
        lrs, bss = np.array(table.columns, dtype=float), np.array(table.index, dtype=float)
        z = table.to_numpy(dtype=float)
        flat = np.isnan(z).any() or np.nanmax(z) == np.nanmin(z)
        if len(lrs) >= 3 and len(bss) >= 3 and not flat:
            cs = ax.contourf(np.log10(lrs), np.log2(bss), z, levels=10, cmap="viridis")
            ax.scatter(*np.meshgrid(np.log10(lrs), np.log2(bss)), c="white", s=8)
            ax.set_xticks(np.log10(lrs), [f"{v:.2g}" for v in lrs], rotation=30)
            ax.set_yticks(np.log2(bss), [str(int(v)) for v in bss])
        else:  # a small or flat grid: a heat map with the value written in each cell
            lo, hi = (np.nanmin(z), np.nanmax(z)) if not np.isnan(z).all() else (0.0, 1.0)
            cs = ax.imshow(z, origin="lower", aspect="auto", cmap="viridis", vmin=lo, vmax=hi if hi > lo else lo + 1)
            ax.set_xticks(range(len(lrs)), [f"{v:.2g}" for v in lrs], rotation=30)
            ax.set_yticks(range(len(bss)), [str(int(v)) for v in bss])
            for (i, j), v in np.ndenumerate(z):
                ax.text(j, i, "n/a" if np.isnan(v) else f"{v:.3g}", ha="center", va="center", fontsize=9,
                        color="white" if hi == lo or v < (lo + hi) / 2 else "black")
        fig.colorbar(cs, ax=ax, label=col)
        scale = "" if flat or len(lrs) < 3 or len(bss) < 3 else " (log scale)"
        ax.set_xlabel(f"learning rate{scale}")
        ax.set_ylabel(f"effective batch size{scale}")
        ax.set_title(f"{task}: {col.split('/', 1)[1]}")
        fig.tight_layout()
        path = out / f"contour_{task}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    if columns:
        fig, ax = plt.subplots(figsize=(6, 4))
        part = frame.sort_values("lr_bs_ratio")
        for task, col in columns:
            ax.plot(part["lr_bs_ratio"], part[col], marker="o", linestyle="-", alpha=0.8,
                    label=f"{task} ({col.split('/', 1)[1]})")
        ax.set_xscale("log")
        ax.set_xlabel("learning rate / effective batch size")
        ax.set_ylabel("score")
        ax.legend(fontsize=7, loc="best")
        ax.grid(True, which="both", alpha=0.3)
        ax.set_title("score against the LR/BS ratio")
        fig.tight_layout()
        path = out / "ratio.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="sweep YAML (see configs/sweeps/)")
    parser.add_argument("overrides", nargs="*", help="a.b.c=value overrides of the sweep config")


def cli_main(args: argparse.Namespace) -> int:
    run_sweep(load_config(SweepConfig, args.config, args.overrides))
    return 0
