"""What a training run is, for every stage (SFT, DPO, RM, RLVR): the config base they all derive from, so seed,
output_dir, checkpoints and logging are spelled the same way everywhere, and the result they all return, so the
pipeline and the sweep can chain and compare stages.

    model, output_dir, seed, optim, engine, dist       what to train, where, with which optimiser and ranks
                                                       (OptimConfig, EngineConfig, DistConfig; core.engine)
    lora: {rank, alpha, dropout, target_modules}       low-rank adapters (peft) instead of full fine-tuning;
                                                       rank 0: off (LoraConfig; core.model_factory)
    checkpoints: {save_every, keep_last, resume}       core.checkpoint
    logging: {tensorboard, wandb_project, run_name}    core.metrics
    on_nonfinite: stop | skip                          core.finite

Earlier spellings (`save_every`, `keep_checkpoints`, `resume`, `tensorboard`, `wandb_project` at the top level of
SFT/DPO/RM configs; `train.save_every`, `train.keep_last`, `train.resume`, `train.on_nonfinite` in RLVR configs)
are rejected with a message naming the new key (`MOVED_KEYS`, read by core.config.validate_config).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from core.config import FrozenConfig

FINAL_MARKER = ".rlvr-complete"  # written last into an SFT/DPO/RM run's final/ folder: the stage finished


class OptimConfig(FrozenConfig):
    """Optimiser, schedule and batch shape of one trainer."""

    lr: float = Field(1e-5, ge=0, description="peak learning rate (0: a frozen run, the control for learning tests)")
    per_device_batch_size: int = Field(1, ge=1, description="micro-batch size per rank")
    gradient_accumulation_steps: int = Field(1, ge=1, description="micro-batches per optimiser step")
    weight_decay: float = Field(0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    lr_scheduler: Literal["constant", "linear", "cosine"] = Field("linear", description="decay after warm-up")
    warmup_ratio: float = Field(0.0, ge=0, le=1, description="fraction of total steps spent warming up")
    warmup_steps: int | None = Field(None, ge=0, description="overrides warmup_ratio when set")
    max_grad_norm: float = Field(1.0, ge=0, description="gradient clipping; 0 disables")

    def effective_batch_size(self, world_size: int) -> int:
        return self.per_device_batch_size * self.gradient_accumulation_steps * world_size

    def warmup_for(self, total_steps: int) -> int:
        if self.warmup_steps is not None:
            return self.warmup_steps
        return int(math.ceil(self.warmup_ratio * total_steps))


class EngineConfig(FrozenConfig):
    """Where and how a model trains."""

    zero_stage: Literal[0, 1, 2, 3] = Field(0, description="DeepSpeed ZeRO stage")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="CUDA when present, else CPU")
    gradient_checkpointing: bool = False
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="training precision (core.engine.precision_for). auto: bf16 on a CUDA GPU with native "
        "bf16, else fp32. bf16 under ZeRO 1-3: DeepSpeed holds bf16 weights, fp32 master weights, and accumulates "
        "gradients in fp32; under ZeRO 0, where DeepSpeed 0.19 can only accumulate bf16 gradients in bf16: fp32 "
        "weights and bf16 matmuls under torch.autocast. Frozen models (the reference) compute as the trained ones")
    cpu_autocast: Literal["auto", "bf16", "off"] = Field(
        "off", description="CPU mixed precision for forward/backward: bf16 matmuls under torch.autocast, fp32 "
                           "weights and optimiser state; auto = bf16 when the CPU has native bf16 (AVX-512 BF16/AMX)")
    num_threads: int | None = Field(None, ge=1, description="torch threads per process (CPU); default: all")

    @model_validator(mode="after")
    def _check_precision(self) -> EngineConfig:
        if self.precision == "bf16" and self.zero_stage == 1:
            raise ValueError(ZERO1_BF16)
        return self


# core.engine.precision_for says the same when engine.precision=auto resolves to bf16 (a CUDA GPU)
ZERO1_BF16 = ("engine.zero_stage=1 with bf16: DeepSpeed 0.19's ZeRO-1 bf16 optimizer (BF16_Optimizer) drops "
              "gradient contributions below bf16 resolution when it accumulates micro-batches, fp32 "
              "grad_accum_dtype or not (tests/rlvr/test_mixed_precision.py); use engine.zero_stage=2 (ZeRO-1's "
              "savings and more, fp32 accumulation) or engine.precision=fp32")


class DistConfig(FrozenConfig):
    """How many ranks, and where rank 0 listens. World size 1 needs no launcher."""

    world_size: int = Field(1, ge=1, description="data-parallel ranks")
    master_addr: str | None = Field(None, description="override of rank 0's rendezvous address. Default: RLVR "
                                    "learners (Ray actors) meet at rank 0's node address; SFT/DPO local ranks "
                                    "at 127.0.0.1")
    master_port: int | None = Field(None, description="override of the rendezvous port; default: a port free on "
                                    "rank 0's node")


class LoraConfig(FrozenConfig):
    """Low-rank adapters (peft's LoRA) on the trained model's linear layers; the base weights stay frozen
    (core.model_factory). rank 0: off, the whole model trains."""

    rank: int = Field(0, ge=0, description="LoRA rank r; 0 disables LoRA (full fine-tuning)")
    alpha: float = Field(16.0, gt=0, description="LoRA scale numerator: the update is (alpha / rank) * B @ A")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the adapter's input (training mode only)")
    target_modules: tuple[str, ...] = Field(
        ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"), min_length=1,
        description="names (last path component) of the linear layers that get an adapter; the defaults are "
                    "Llama/SmolLM2's attention and MLP projections")
    modules_to_save: tuple[str, ...] = Field(
        (), description="modules trained in full beside the adapters (peft's modules_to_save; a name matches every "
                        "module whose path ends with it), e.g. [model.norm]: the final norm's scale, which sets how "
                        "far the logits can move when the output embedding is frozen. A value model's head is "
                        "always trained in full")

    @property
    def enabled(self) -> bool:
        return self.rank > 0


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
    lora: LoraConfig = Field(default_factory=LoraConfig)
    checkpoints: CheckpointsConfig = Field(default_factory=CheckpointsConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    on_nonfinite: Literal["stop", "skip"] = Field(
        "stop", description="a NaN/inf loss, grad norm or weight: stop before saving (exit 1), or skip optimiser "
        "steps whose gradients are not finite (ZeRO stage 0; non-finite weights still stop)")

    @model_validator(mode="after")
    def _check_lora(self) -> RunConfig:
        if self.lora.enabled and self.engine.zero_stage == 3:
            raise ValueError("lora.rank > 0 with engine.zero_stage=3 is not supported yet (the merge and the "
                             "adapter-only checkpoints assume whole parameters); use engine.zero_stage 0-2, which "
                             "the adapters' small optimiser state fits")
        return self

    @property
    def run_name(self) -> str:
        return self.logging.run_name or Path(self.output_dir).name


@dataclass(frozen=True)
class TrainResult:
    output_dir: Path  # the run folder (config.yaml, metrics.jsonl, checkpoints/)
    model_dir: Path  # the final model in Hugging Face format: the next stage's `model`
    metrics: dict[str, float] = field(default_factory=dict)  # final/summary metrics
    steps: int = 0
