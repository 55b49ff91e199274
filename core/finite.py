"""Non-finite guards: a NaN or infinite loss, gradient norm or weight never reaches a checkpoint.

Trainers check each update's losses and gradient norms, and the weights before anything is saved. The default
(`on_nonfinite: stop`) stops the run right there, naming the step and the metric, so the newest checkpoint on disk
is the last good state. `on_nonfinite: skip` instead leaves out an optimiser step whose (already reduced)
gradients are not finite: the weights and the optimiser state stay as they were, the LR schedule moves on and the
skip is counted. That needs gradients the trainer can see before the step (ZeRO stage 0); weights that turned
non-finite anyway still stop the run.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch

WATCHED_SUFFIXES = ("loss", "grad_norm")


class NonFiniteError(RuntimeError):
    """A non-finite loss, gradient norm or weight: the run stops before saving (exit code 1)."""


def nonfinite_metrics(metrics: Mapping[str, Any], suffixes: Iterable[str] = WATCHED_SUFFIXES) -> list[tuple[str, Any]]:
    """(name, value) of the watched metrics (names ending in a suffix) that are not finite numbers."""
    bad = []
    for key, value in metrics.items():
        if key.split("/")[-1] in tuple(suffixes) and isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                bad.append((key, value))
    return bad


def nonfinite_problem(metrics: Mapping[str, Any], nonfinite_weights: float, *, skip: bool) -> tuple[str, Any] | None:
    """The first reason to stop a run before it saves: a non-finite loss or grad norm (unless on_nonfinite=skip
    left such optimiser steps out), or non-finite weights; None when the step is clean."""
    bad = [] if skip else nonfinite_metrics(metrics)
    if nonfinite_weights:
        bad.append(("the weights", f"non-finite in {int(nonfinite_weights)} values"))
    return bad[0] if bad else None


def stop_message(where: str, problem: tuple[str, Any], newest_checkpoint, *, skip: bool, on: str = "") -> str:
    """What the run says when `nonfinite_problem` stops it (`where`: e.g. "sft step 3"; `on`: e.g. "learner rank
    1")."""
    key, value = problem
    return (f"{where}: {key} is {value}{f' on {on}' if on else ''}; stopped before saving, so no non-finite state was written (newest "
            f"checkpoint: {newest_checkpoint or 'none'}). Lower optim.lr or check the data"
            + ("" if skip else "; on_nonfinite=skip skips updates with non-finite gradients"))


def count_nonfinite(module) -> int:
    """Non-finite values in a module's parameters as held on this rank (a ZeRO-3 rank checks its partition)."""
    total = 0
    with torch.no_grad():
        for p in module.parameters():
            t = p.ds_tensor if hasattr(p, "ds_tensor") else p.data
            if t.numel() and t.is_floating_point():
                total += int((~torch.isfinite(t)).sum())
    return total


def grads_finite(module) -> bool:
    return all(bool(torch.isfinite(p.grad).all()) for p in module.parameters() if p.grad is not None)


def step_engine(engine, *, skip_nonfinite: bool) -> bool:
    """`engine.step()` for a DeepSpeed engine; with `skip_nonfinite`, an accumulation boundary whose gradients are
    not finite runs the step with the optimiser's update left out (gradients zeroed, `optimizer.step` a no-op for
    that call), so DeepSpeed's step bookkeeping stays consistent. Returns False when the update was skipped."""
    if not skip_nonfinite or not engine.is_gradient_accumulation_boundary() or grads_finite(engine.module):
        engine.step()
        return True
    if engine.zero_optimization():
        raise ValueError("skipping non-finite updates needs ZeRO stage 0 (ZeRO partitions gradients inside "
                         "DeepSpeed's optimiser)")
    for p in engine.module.parameters():
        if p.grad is not None:
            p.grad.zero_()
    optimizer = engine.optimizer
    own = "step" in vars(optimizer)
    original = optimizer.step
    optimizer.step = lambda *args, **kwargs: None
    try:
        engine.step()
    finally:
        if own:
            optimizer.step = original
        else:
            del optimizer.step
    return False
