"""The one loss-reduction convention of every trainer (SFT, DPO, RM and the RL learners), and the micro-batch
loop that applies it.

Convention (STYLE.md #3): an objective produces a loss *sum* over its units (target tokens for SFT and RL, pairs for
DPO and the reward model). `aggregate_loss` divides it by `num_units` = the units of the whole optimiser step (all
micro-batches, all ranks) divided by the world size, and the engine backpropagates it with DeepSpeed's
accumulation scaling off (`engine.backward(loss, scale_wrt_gas=False)`). DeepSpeed's all-reduce then averages the
gradients over the ranks, which completes the mean: the gradient equals that of sum(every unit's loss) / global
units, however the step is split into micro-batches or ranks. The LR/batch-size experiments depend on this.

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


def aggregate_loss(values: torch.Tensor, mask: torch.Tensor | None = None, *,
                   num_units: float | torch.Tensor | None = None) -> torch.Tensor:
    """sum(values * mask) / num_units (default: the units in this batch, `mask.sum()` or `values.numel()`).
    values: [B, T] per-token losses with mask [B, T], or already-summed losses of any shape -> scalar."""
    if mask is not None:
        mask = mask.to(values.dtype)
        values = values * mask
    count = (mask.sum() if mask is not None else torch.tensor(float(values.numel()), dtype=values.dtype))
    denom = count if num_units is None else torch.as_tensor(num_units, dtype=values.dtype, device=values.device)
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
