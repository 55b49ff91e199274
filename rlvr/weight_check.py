"""The weight-sync check's probe and its tolerance, without Ray: the driver's check (rlvr.weight_sync.WeightSync.
verify) and scripts/gpu_check.py (plain classes on a GPU machine without Ray) measure the same thing.

The generator decodes PROBE_MESSAGES greedily for PROBE_TOKENS tokens; the learner scores the same tokens; the
largest |log-prob difference| must be within the tolerance for the two sides' compute dtypes (`tolerance_for`):
`weight_sync.tolerance` when both compute in fp32 (the same weights then agree up to kernel rounding, ~1e-6 on
the tiny model), `weight_sync.bf16_tolerance` when either computes in bf16, where rounding and another kernel
alone move the log-probs by more (its default is a measurement: docs/gpu_check.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

PROBE_MESSAGES = [{"role": "user", "content": "Count from 1 to 5, then say the answer is 42."}]
PROBE_TOKENS = 12


def tolerance_for(learner: dict[str, Any], generator: dict[str, Any], *, tolerance: float,
                  bf16_tolerance: float) -> tuple[str, float]:
    """(config key, bound) for a learner rank and a generator, from their `info()` (the learner's
    `compute_dtype`, the generator's `dtype`): the bf16 bound when either computes in bf16."""
    dtypes = {learner.get("compute_dtype") or "float32", generator.get("dtype") or "float32"}
    if "bfloat16" in dtypes:
        return "bf16_tolerance", bf16_tolerance
    return "tolerance", tolerance


def max_gap(generator_logprobs: Sequence[float], learner_logprobs: Sequence[float]) -> float:
    """The largest |difference| between the two sides' log-probs of the same tokens."""
    return max((abs(a - b) for a, b in zip(generator_logprobs, learner_logprobs)), default=0.0)
