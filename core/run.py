"""What a training run is, for every stage (SFT, DPO, RM, RLVR): the config base they all derive from, so seed,
output_dir, checkpoints and logging are spelled the same way everywhere, and the result they all return, so the
pipeline and the sweep can chain and compare stages.

    model, output_dir, seed, optim, engine, dist       what to train, where, with which optimiser and ranks
    checkpoints: {save_every, keep_last, resume}       core.checkpoint
    logging: {tensorboard, wandb_project, run_name}    core.metrics
    on_nonfinite: stop | skip                          core.finite

Earlier spellings (`save_every`, `keep_checkpoints`, `resume`, `tensorboard`, `wandb_project` at the top level of
SFT/DPO/RM configs; `train.save_every`, `train.keep_last`, `train.resume`, `train.on_nonfinite` in RLVR configs)
are rejected with a message naming the new key (`MOVED_KEYS`, read by core.config.validate_config).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field

from core.config import FrozenConfig
from core.engine import DistConfig, EngineConfig, OptimConfig

FINAL_MARKER = ".rlvr-complete"  # written last into an SFT/DPO/RM run's final/ folder: the stage finished


class CheckpointsConfig(FrozenConfig):
    """When checkpoints are written, how many are kept, and whether a run resumes from them."""

    save_every: int = Field(0, ge=0, description="checkpoint every N steps; 0: none in between (rlvr train still "
                                                 "checkpoints its last step; sft/dpo/rm a run stopped early)")
    keep_last: int = Field(2, ge=1, description="complete checkpoints kept (the newest usable one is never deleted)")
    resume: Literal["auto", "never", "must"] = Field(
        "auto", description="auto: resume from the newest usable checkpoint in output_dir, start fresh when there is "
        "none, and stop (exit 2) when checkpoints exist but none is usable; must: a usable checkpoint is required; "
        "never: start fresh, moving an earlier run's checkpoints/ and metrics.jsonl aside")


class LoggingConfig(FrozenConfig):
    """Where metrics go besides output_dir/metrics.jsonl (always written)."""

    tensorboard: bool = Field(True, description="TensorBoard scalars in output_dir/tensorboard")
    wandb_project: str | None = Field(None, description="Weights & Biases project (needs the wandb package)")
    run_name: str | None = Field(None, description="W&B run name; default: the output folder's name")


class RunConfig(FrozenConfig):
    """Fields every training stage shares. Subclasses add their data and objective settings."""

    MOVED_KEYS: ClassVar[dict[str, str]] = {
        "save_every": "checkpoints.save_every", "keep_checkpoints": "checkpoints.keep_last",
        "resume": "checkpoints.resume", "tensorboard": "logging.tensorboard",
        "wandb_project": "logging.wandb_project", "train.save_every": "checkpoints.save_every",
        "train.keep_last": "checkpoints.keep_last", "train.resume": "checkpoints.resume",
        "train.on_nonfinite": "on_nonfinite",
    }

    model: str = Field(..., description="model to start from: bundled name, local folder or hub name")
    output_dir: str = Field(..., description="run folder: config.yaml, metrics.jsonl, checkpoints/, final/")
    seed: int = Field(42, description="data order, sampling and initialisation")
    optim: OptimConfig = Field(default_factory=OptimConfig)
    engine: EngineConfig = Field(default_factory=EngineConfig)
    dist: DistConfig = Field(default_factory=DistConfig)
    checkpoints: CheckpointsConfig = Field(default_factory=CheckpointsConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    on_nonfinite: Literal["stop", "skip"] = Field(
        "stop", description="a NaN/inf loss, grad norm or weight: stop before saving (exit 1), or skip optimiser "
        "steps whose gradients are not finite (ZeRO stage 0; non-finite weights still stop)")

    @property
    def run_name(self) -> str:
        return self.logging.run_name or Path(self.output_dir).name


@dataclass(frozen=True)
class TrainResult:
    output_dir: Path  # the run folder (config.yaml, metrics.jsonl, checkpoints/)
    model_dir: Path  # the final model in Hugging Face format: the next stage's `model`
    metrics: dict[str, float] = field(default_factory=dict)  # final/summary metrics
    steps: int = 0
