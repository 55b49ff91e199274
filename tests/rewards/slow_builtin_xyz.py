"""A stand-in built-in verifier module whose import is slow, for the registry's concurrent-first-lookup test."""

import time

from rewards.base import Score
from rewards.registry import register

time.sleep(0.5)


@register("slow_builtin")
def slow_builtin(response, ground_truth, *, prompt=None):
    return Score(1.0)
