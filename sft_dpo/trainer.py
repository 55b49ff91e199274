"""The training loop shared by SFT, DPO and the reward model. One objective object supplies the model, the data
and the per-micro-batch loss; this module owns everything else, in reading order:

  run folder + resume check -> tokenised data -> (objective hook, e.g. DPO's reference log-probs) -> model in a
  DeepSpeed engine -> restore the latest checkpoint -> steps -> checkpoints -> final HF model + marker.

Run folder (`output_dir`): config.yaml, metrics.jsonl (+ tensorboard/), checkpoints/step_N/{hf/, deepspeed/,
trainer_state_rank*.pt}, final/ (HF model + tokenizer, `.rlvr-complete` written last). A finished run returns at
once; an unfinished one resumes from the newest complete checkpoint: model, optimiser, scheduler, RNG and the data
position (the step number fixes it, since the order is a pure function of seed, epoch and step).

Data order: every epoch is a permutation of the examples seeded by (seed, epoch). Step k of an epoch takes the
next `effective batch` examples; rank r takes its contiguous slice and cuts it into micro-batches. An incomplete
final batch is dropped (every rank must run the same number of micro-batches). `max_steps` overrides
`num_epochs` and may run past one epoch.

Loss reduction (STYLE.md #3, core.losses): objectives return loss *sums*; each micro-batch's sum is divided by the
step's loss units (tokens or pairs) over all micro-batches and ranks, divided by the world size, and backpropagated
without DeepSpeed's accumulation scaling; DeepSpeed's gradient averaging over ranks completes the mean. The gradient
is therefore the same however the step is split into micro-batches or ranks.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import Field
from tqdm.auto import tqdm

from core.checkpoint import (
    CheckpointError,
    CheckpointManager,
    ResumeError,
    capture_rng_state,
    check_same_lora,
    check_same_optimiser,
    load_state,
    optimiser_settings,
    out_of_space_guard,
    restore_rng_state,
    resume_point,
    safe_deepspeed_load,
)
from core.config import ConfigError, save_config
from core.device import DeviceInfo, torch_dtype
from core.engine import all_reduce_sum, barrier, build_engine, log_batch_shape
from core.finite import NonFiniteError, count_nonfinite, nonfinite_problem, stop_message
from core.logging import get_logger
from core.losses import aggregate_loss, per_rank_units, train_micro_batches
from core.metrics import MetricsLogger, prepare_metrics_file
from core.model_factory import adapter_only_checkpoints, has_lora, merged_state_dict, save_adapter, unwrap
from core.plots import plot_curves
from core.preflight import checkpoint_bytes, parameter_count
from core.run import FINAL_MARKER, RunConfig, TrainResult
from core.tokens import set_stop_tokens
from sft_dpo.data import DataError, examples_digest

log = get_logger(__name__)

class PreludeConfig(RunConfig):
    """What SFT, DPO and the reward model add to the shared run config (core.run.RunConfig). Subclasses add `data`
    and objective settings."""

    num_epochs: int = Field(1, ge=1, description="passes over the data (ignored when max_steps is set)")
    max_steps: int | None = Field(None, ge=1, description="optimiser steps; overrides num_epochs")
    log_every: int = Field(1, ge=1, description="metrics line every N steps")
    stop_after_steps: int | None = Field(None, ge=1, description="stop (with a checkpoint) after this step without "
                                                                 "changing the schedule: time-boxed jobs, resume tests")


@dataclass
class RunContext:
    cfg: Any
    rank: int
    world_size: int
    device: DeviceInfo
    model_path: str
    tokenizer: Any
    out: Path

    @property
    def torch_device(self) -> torch.device:
        if self.device.kind == "cuda":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        return torch_dtype(self.device.param_dtype)


class Objective:
    """What a stage supplies to the loop. Losses are sums over `unit`s (see module docstring)."""

    name = "objective"
    unit = "examples"
    keep_dropout = False  # preference/reward objectives compare log-probs: dropout off (core.engine)

    def load_examples(self, ctx: RunContext) -> tuple[list, dict[str, float]]:
        raise NotImplementedError

    def before_model(self, ctx: RunContext, examples: list) -> dict[str, float]:
        return {}

    def load_model(self, ctx: RunContext) -> torch.nn.Module:
        raise NotImplementedError

    def collate(self, examples: list, pad_id: int) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def count(self, batch: dict[str, torch.Tensor]) -> tuple[int, int]:
        """(loss units, tokens) in a micro-batch."""
        raise NotImplementedError

    def loss(self, engine, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(loss sum, metric sums over the same units)."""
        raise NotImplementedError

    def hf_model(self, module: torch.nn.Module):
        return module

    def hf_state_dict(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return state_dict

    def after_training(self, ctx: RunContext, engine) -> dict[str, float]:
        return {}


# ---------------------------------------------------------------- helpers

def finished_result(out: Path) -> TrainResult | None:
    marker = out / "final" / FINAL_MARKER
    if not marker.is_file():
        return None
    info = json.loads(marker.read_text())
    return TrainResult(output_dir=out, model_dir=out / "final", metrics=info.get("metrics", {}),
                       steps=info.get("steps", 0))


def step_indices(n: int, step: int, *, seed: int, global_batch: int) -> list[int]:
    """Example indices of optimiser step `step` (1-based) across all ranks."""
    spe = n // global_batch
    epoch, k = divmod(step - 1, spe)
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    perm = torch.randperm(n, generator=g)
    return perm[k * global_batch:(k + 1) * global_batch].tolist()


def move(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in batch.items()}


# ---------------------------------------------------------------- saving

def save_hf(engine, objective: Objective, tokenizer, out: Path, *, rank: int, zero_stage: int) -> None:
    """The trained model in Hugging Face format (loadable by transformers and vLLM). Collective under ZeRO-3.
    With LoRA: the adapters merged into the weights (core.model_factory.merged_state_dict), and the adapter
    alone in `out/adapter` (peft's format)."""
    lora = has_lora(engine.module)
    state = engine._zero3_consolidated_16bit_state_dict() if zero_stage == 3 else None
    if rank == 0:
        model = unwrap(objective.hf_model(engine.module))
        if lora:
            state = merged_state_dict(engine.module)
            save_adapter(engine.module, out / "adapter")
        if state is not None:
            state = objective.hf_state_dict(state)
        if getattr(model, "can_generate", lambda: False)():
            set_stop_tokens(model, tokenizer)  # later stages and other tools stop at the end of the turn
        model.save_pretrained(out, state_dict=state, safe_serialization=True)
        tokenizer.save_pretrained(out)


def save_checkpoint(ctx: RunContext, mgr: CheckpointManager, engine, objective: Objective, step: int,
                    data_digest: str) -> None:
    if ctx.rank == 0:
        mgr.begin(step)
    barrier()
    tmp = mgr.root / f".tmp-{mgr.step_name(step)}"
    with out_of_space_guard(tmp, mgr.root, lambda: checkpoint_bytes(parameter_count(Path(ctx.model_path)))):
        # LoRA: the trainable tensors (adapters) and their optimiser state only; the base weights are `model`'s
        engine.save_checkpoint(str(tmp / "deepspeed"), tag="state", exclude_frozen_parameters=has_lora(engine.module))
        save_hf(engine, objective, ctx.tokenizer, tmp / "hf", rank=ctx.rank, zero_stage=ctx.cfg.engine.zero_stage)
        torch.save({"step": step, "rng": capture_rng_state()}, tmp / f"trainer_state_rank{ctx.rank}.pt")
    barrier()
    if ctx.rank == 0:
        mgr.commit(step, extra={"data_digest": data_digest, "world_size": ctx.world_size,
                                "optimiser": optimiser_settings(optim=ctx.cfg.optim),
                                "lora": ctx.cfg.lora.model_dump(mode="json")})
    barrier()


def plan_resume(ctx: RunContext, mgr: CheckpointManager, data_digest: str) -> Path | None:
    """The checkpoint to resume from (checkpoints.resume; core.checkpoint.resume_point), chosen before the model
    loads: written with this world size, on the same tokenised data."""
    def accept(path: Path) -> None:
        manifest = json.loads((path / "MANIFEST.json").read_text())
        if not (path / f"trainer_state_rank{ctx.rank}.pt").is_file():
            raise ResumeError(f"{path} was written by {manifest.get('world_size', 'another number of')} ranks, this "
                              f"run has {ctx.world_size}; use the same dist.world_size, or checkpoints.resume=never to "
                              "start over")
        check_same_optimiser(path, manifest.get("optimiser"), optimiser_settings(optim=ctx.cfg.optim))
        check_same_lora(path, manifest.get("lora"), ctx.cfg.lora.model_dump(mode="json"))
        if manifest.get("data_digest", data_digest) != data_digest:
            raise ResumeError(f"{path} was trained on other data (the tokenised examples differ: data.path, its "
                              "files, the template, tokenizer or max_length changed); resume with the same data, or "
                              "set checkpoints.resume=never to start over")

    chosen = resume_point(mgr, ctx.cfg.checkpoints.resume, accept, set_aside_earlier=ctx.rank == 0)
    barrier()  # rank 0 has set an earlier run aside (checkpoints.resume=never) before anyone writes
    return None if chosen is None else chosen[0]


def load_checkpoint(ctx: RunContext, ckpt: Path, engine) -> int:
    state = load_state(ckpt / f"trainer_state_rank{ctx.rank}.pt")
    with safe_deepspeed_load():  # every torch.load weights_only=True: a pickle payload never runs
        load_path, _ = engine.load_checkpoint(str(ckpt / "deepspeed"), tag="state",
                                              load_module_strict=not has_lora(engine.module))
    if load_path is None:
        raise CheckpointError(f"DeepSpeed could not load the checkpoint in {ckpt / 'deepspeed'}")
    restore_rng_state(state["rng"])
    return int(state["step"])


def check_finite(ctx: RunContext, engine, step: int, metrics: dict[str, float], mgr: CheckpointManager,
                 name: str) -> None:
    """Stop before anything is saved when the step's loss or grad norm (unless on_nonfinite=skip skipped such
    optimiser steps) or the weights are not finite (core.finite). Every rank reaches the same verdict."""
    skip = ctx.cfg.on_nonfinite == "skip"
    weights = all_reduce_sum(torch.tensor([float(count_nonfinite(engine.module))], device=ctx.torch_device))
    problem = nonfinite_problem(metrics, weights.item(), skip=skip)
    if problem is not None:
        raise NonFiniteError(stop_message(f"{name} step {step}", problem, mgr.latest(), skip=skip))


def write_final(ctx: RunContext, engine, objective: Objective, steps: int, metrics: dict[str, float]) -> Path:
    final, tmp = ctx.out / "final", ctx.out / ".tmp-final"
    if ctx.rank == 0 and tmp.exists():
        shutil.rmtree(tmp)
    barrier()
    save_hf(engine, objective, ctx.tokenizer, tmp, rank=ctx.rank, zero_stage=ctx.cfg.engine.zero_stage)
    if ctx.rank == 0:
        (tmp / FINAL_MARKER).write_text(json.dumps({"steps": steps, "metrics": metrics}, indent=1))
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
    barrier()
    return final


# ---------------------------------------------------------------- the loop

def train(ctx: RunContext, objective: Objective) -> TrainResult:
    """Run (or resume) one stage in this rank. The process group exists already (see sft_dpo.launch)."""
    cfg, rank, world = ctx.cfg, ctx.rank, ctx.world_size
    done = finished_result(ctx.out)
    if done is not None:
        log.info("%s: already finished in %s", objective.name, done.model_dir)
        return done
    torch.manual_seed(cfg.seed)
    if rank == 0:
        ctx.out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, ctx.out / "config.yaml")

    if cfg.lora.enabled and cfg.lora.dropout > 0 and not objective.keep_dropout:
        raise ConfigError(f"lora.dropout: {objective.name} trains with dropout off (it compares log-probs or "
                          "scores), so an adapter dropout would be switched off unseen; set lora.dropout=0")
    examples, data_metrics = objective.load_examples(ctx)
    data_digest = examples_digest(examples)  # saved with each checkpoint: a resume on other data is refused
    optim = cfg.optim
    global_batch = optim.effective_batch_size(world)
    spe = len(examples) // global_batch
    if spe == 0:
        raise DataError(f"{len(examples)} training examples are fewer than one effective batch ({global_batch} = "
                         f"{optim.per_device_batch_size} x {optim.gradient_accumulation_steps} x {world} ranks)")
    total = cfg.max_steps or cfg.num_epochs * spe
    shape = log_batch_shape(optim, world, logger=log)
    mgr = CheckpointManager(ctx.out / "checkpoints", keep_last=cfg.checkpoints.keep_last)
    ckpt = plan_resume(ctx, mgr, data_digest)
    extra = objective.before_model(ctx, examples)

    model = objective.load_model(ctx)
    engine = build_engine(model, optim, cfg.engine, total_steps=total, world_size=world, device=ctx.device,
                          keep_dropout=objective.keep_dropout)
    if has_lora(engine.module):
        adapter_only_checkpoints(engine)  # checkpoints: the adapters and their optimiser state
    start = 0
    if ckpt is not None:
        start = load_checkpoint(ctx, ckpt, engine)
        log.info("%s: resumed from %s (step %d of %d)", objective.name, ckpt, start, total)
    metrics_log = None
    if rank == 0:
        prepare_metrics_file(ctx.out, start if ckpt is not None else None)  # torn lines dropped; never overwritten
        metrics_log = MetricsLogger(ctx.out, tensorboard=cfg.logging.tensorboard,
                                    wandb_project=cfg.logging.wandb_project, run_name=cfg.run_name, append=True)
        metrics_log.log(start, {**{f"batch/{k}": v for k, v in shape.items()}, "total_steps": total,
                                "steps_per_epoch": spe, "resumed_from_step": start, **data_metrics, **extra})

    pad_id = ctx.tokenizer.pad_token_id if ctx.tokenizer.pad_token_id is not None else ctx.tokenizer.eos_token_id
    stop = min(total, cfg.stop_after_steps or total)
    bar = tqdm(total=total, initial=start, disable=rank != 0, desc=objective.name, unit="step", dynamic_ncols=True)
    last: dict[str, float] = {}
    step = start
    try:
        for step in range(start + 1, stop + 1):
            t0 = time.perf_counter()
            idx = step_indices(len(examples), step, seed=cfg.seed, global_batch=global_batch)
            per_rank = optim.per_device_batch_size * optim.gradient_accumulation_steps
            mine = idx[rank * per_rank:(rank + 1) * per_rank]
            micro = [objective.collate([examples[i] for i in mine[j:j + optim.per_device_batch_size]], pad_id)
                     for j in range(0, per_rank, optim.per_device_batch_size)]
            counts = torch.tensor([sum(objective.count(b)[k] for b in micro) for k in (0, 1)], dtype=torch.float64)
            units, tokens = all_reduce_sum(counts.to(ctx.torch_device)).tolist()
            num_units = per_rank_units(units, world)  # core.losses: the one loss-reduction convention
            lr = engine.get_lr()[0]

            def loss_fn(batch, num_units=num_units):
                part, stats = objective.loss(engine, move(batch, ctx.torch_device))
                return aggregate_loss(part, num_units=num_units), {"loss": part.detach(), **stats}

            step_out = train_micro_batches(engine, micro, loss_fn, skip_nonfinite=cfg.on_nonfinite == "skip")
            names = sorted(step_out.stats)
            packed = torch.tensor([step_out.stats[k] for k in names], dtype=torch.float64)
            packed = all_reduce_sum(packed.to(ctx.torch_device)).cpu() / max(units, 1.0)
            dt = time.perf_counter() - t0
            last = {"loss": packed[names.index("loss")].item(),
                    **{k: packed[i].item() for i, k in enumerate(names) if k != "loss"},
                    "lr": lr, "epoch": (step - 1) / spe, f"{objective.unit}_per_step": units,
                    "tokens_per_s": tokens / dt, "step_time_s": dt}
            if step_out.grad_norm is not None:
                last["grad_norm"] = step_out.grad_norm
            if cfg.on_nonfinite == "skip":
                last["skipped_step"] = float(step_out.skipped)
            check_finite(ctx, engine, step, last, mgr, objective.name)
            bar.update(1)
            bar.set_postfix(loss=f"{last['loss']:.4f}", tok_s=f"{last['tokens_per_s']:.0f}")
            if metrics_log is not None and (step % cfg.log_every == 0 or step == stop):
                metrics_log.log(step, last)
            if (cfg.checkpoints.save_every and step % cfg.checkpoints.save_every == 0) or (step == stop < total):
                save_checkpoint(ctx, mgr, engine, objective, step, data_digest)
        bar.close()
        if stop < total:
            log.info("%s: stopped after step %d of %d (stop_after_steps); rerun to resume", objective.name, stop, total)
            return TrainResult(output_dir=ctx.out, model_dir=ctx.out / "final", metrics=last, steps=stop)
        summary = {**last, **objective.after_training(ctx, engine)}
        if metrics_log is not None and summary.keys() - last.keys():
            metrics_log.log(step, {k: v for k, v in summary.items() if k not in last})
        final = write_final(ctx, engine, objective, total, summary)
        return TrainResult(output_dir=ctx.out, model_dir=final, metrics=summary, steps=total)
    finally:
        if metrics_log is not None:
            metrics_log.close()
            try:
                plot_curves(ctx.out, title=f"{objective.name}: {ctx.out}")
            except OSError as err:  # e.g. the disk is full: never hide the error that ended the run
                log.warning("curves.png not written: %s", err)
