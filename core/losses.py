"""The one loss-reduction convention of every trainer (SFT, DPO, RM and the RL learners), and the micro-batch
loop that applies it.

Convention (STYLE.md #3): an objective produces a loss *sum* over its units (target tokens for SFT and RL, pairs for
DPO and the reward model). `aggregate_loss` divides it by `num_units` = the units of the whole optimiser step (all
micro-batches, all ranks) divided by the world size, and the engine backpropagates it with DeepSpeed's
accumulation scaling off (`engine.backward(loss, scale_wrt_gas=False)`). DeepSpeed's all-reduce then averages the
gradients over the ranks, which completes the mean: the gradient equals that of sum(every unit's loss) / global
units, however the step is split into micro-batches or ranks. The LR/batch-size experiments depend on this.

The unit is what the loss averages over, named as verl's `loss_agg_mode` (the RL policy loss picks one with
`ppo.loss_agg_mode`; SFT, DPO, RM and the critic use token-mean / pair-mean). For per-token losses l [B, T], mask m:
    token-mean               sum_{i,t} m l / sum of m over the step                 (one unit = one token)
    seq-mean-token-sum       sum_i (sum_t m l) / sequences of the step              (one unit = one sequence)
    seq-mean-token-mean      sum_i (sum_t m l / sum_t m) / sequences of the step    (the GRPO paper's, GSPO's)
    seq-mean-token-sum-norm  sum_{i,t} m l / (sequences of the step x horizon)      (Dr. GRPO: a constant
                             horizon, the response length cap, instead of each response's length)
A sequence with no unmasked token is no unit. Every mode keeps the invariance: each row's weight depends on that
row alone, and the divisor counts the whole step (`loss_units` per micro-batch, summed over micro-batches and ranks).

`train_micro_batches(engine, micro_batches, loss_fn)` is the loop every trainer runs for one optimiser step:
backward per micro-batch, the gradient norm taken at the accumulation boundary before the optimiser step (ZeRO
stage 0, where DeepSpeed does not report it), and the step itself (left out for non-finite gradients when asked,
core.finite.step_engine).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch

from core.finite import step_engine

LOSS_AGG_MODES = ("token-mean", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm")


def _check_mode(mode: str) -> None:
    if mode not in LOSS_AGG_MODES:
        raise ValueError(f"unknown loss_agg_mode {mode!r}; known: {', '.join(LOSS_AGG_MODES)}")


def loss_units(mask: torch.Tensor, mode: str = "token-mean", *, horizon: int | None = None) -> float:
    """The units `mode` averages over in this batch: tokens (mask [B, T] summed), sequences with at least one
    unmasked token, or those sequences x `horizon` (seq-mean-token-sum-norm; default the mask's width T).
    Summed over the micro-batches and ranks of a step, it is aggregate_loss's `num_units` (per_rank_units)."""
    _check_mode(mode)
    if mode == "token-mean":
        return float(mask.sum())
    sequences = float((mask.sum(-1) > 0).sum())
    if mode == "seq-mean-token-sum-norm":
        return sequences * float(mask.shape[-1] if horizon is None else horizon)
    return sequences


def aggregate_loss(values: torch.Tensor, mask: torch.Tensor | None = None, *,
                   num_units: float | torch.Tensor | None = None, mode: str = "token-mean",
                   horizon: int | None = None) -> torch.Tensor:
    """The loss reduction of `mode` (module docstring): sum(row weight x values x mask) / num_units, where the row
    weight is 1, except 1 / (the row's unmasked tokens) for seq-mean-token-mean.
    values: [B, T] per-token losses with mask [B, T], or (token-mean only) already-summed losses of any shape ->
    scalar. num_units default: this batch's own units (`loss_units`; `values.numel()` without a mask)."""
    _check_mode(mode)
    if mask is not None:
        mask = mask.to(values.dtype)
        values = values * mask
        if mode == "seq-mean-token-mean":
            values = values / mask.sum(-1, keepdim=True).clamp(min=1)
    elif mode != "token-mean":
        raise ValueError(f"loss_agg_mode {mode} needs the token mask of [B, T] losses")
    if num_units is None:
        count = loss_units(mask, mode, horizon=horizon) if mask is not None else float(values.numel())
        denom = torch.tensor(count, dtype=values.dtype, device=values.device)
    else:
        denom = torch.as_tensor(num_units, dtype=values.dtype, device=values.device)
    return values.sum() / denom.clamp(min=1)


def per_rank_units(global_units: float, world_size: int) -> float:
    """`num_units` for aggregate_loss: the step's units over all micro-batches and ranks, divided by the world size
    (DeepSpeed averages gradients over ranks)."""
    return max(float(global_units), 1.0) / world_size


@dataclass
class MicroBatchResult:
    loss: float = 0.0  # sum of the backpropagated (aggregated) losses: the step's loss on this rank
    stats: dict[str, float] = field(default_factory=dict)  # sums of what loss_fn reported
    grad_norm: float | None = None  # pre-clipping norm of the averaged gradients; None if nobody knows it
    skipped: bool = False  # the optimiser step was left out (non-finite gradients, on_nonfinite=skip)


def pre_step_grad_norm(engine) -> float | None:
    """The norm of the (already rank-averaged) gradients at the accumulation boundary, before the optimiser step
    clips and applies them. Only without ZeRO: ZeRO engines partition gradients and report the norm themselves."""
    if engine.zero_optimization() or not engine.is_gradient_accumulation_boundary():
        return None
    grads = [p.grad for p in engine.module.parameters() if p.grad is not None]
    if not grads:
        return None
    return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads])))


def train_micro_batches(engine, micro_batches: Iterable[Any],
                        loss_fn: Callable[[Any], tuple[torch.Tensor, dict[str, float]]], *,
                        skip_nonfinite: bool = False) -> MicroBatchResult:
    """One optimiser step of a DeepSpeed engine over `micro_batches` (its gradient_accumulation_steps of them).
    `loss_fn(micro_batch) -> (loss, stat sums)`: `loss` already aggregated with the step's num_units."""
    out = MicroBatchResult()
    computed = None
    for micro in micro_batches:
        loss, stats = loss_fn(micro)
        engine.backward(loss, scale_wrt_gas=False)
        norm = pre_step_grad_norm(engine)
        computed = computed if norm is None else norm
        out.skipped |= not step_engine(engine, skip_nonfinite=skip_nonfinite)
        out.loss += float(loss.detach())
        for key, value in stats.items():
            out.stats[key] = out.stats.get(key, 0.0) + float(value)
    reported = engine.get_global_grad_norm()
    if computed is not None:
        out.grad_norm = computed
    elif reported is not None:
        out.grad_norm = float(reported.item() if hasattr(reported, "item") else reported)
    return out
