"""Deliberately broken verifiers for scoring tests (module-level and registered, so pool workers can load them)."""

from __future__ import annotations

import os
import time

from rewards.base import Score
from rewards.registry import register


@register("test_raises")
def raises(response, ground_truth, *, prompt=None):
    raise RuntimeError("verifier bug")


@register("test_nan")
def returns_nan(response, ground_truth, *, prompt=None):
    return float("nan")


@register("test_wrong_type")
def returns_wrong_type(response, ground_truth, *, prompt=None):
    return "1.0"


@register("test_hangs")
def hangs(response, ground_truth, *, prompt=None):
    time.sleep(3600)
    return Score(1.0)


@register("test_crashes")
def crashes(response, ground_truth, *, prompt=None):
    os._exit(7)


@register("test_half")
def half(response, ground_truth, *, prompt=None):
    return 0.5


@register("test_echo_prompt")
def echo_prompt(response, ground_truth, *, prompt=None):
    return Score(1.0 if prompt == ground_truth else 0.0, f"prompt={prompt!r}")


class HalfReport:
    """An `rlvr verify` hook for test_half: one extra option and one extra summary number."""

    @staticmethod
    def add_cli_arguments(parser):
        parser.add_argument("--half-bonus", type=float, default=0.0)

    @staticmethod
    def report(args, rows, batch):
        return {"half_total_plus_bonus": sum(batch.values) + args.half_bonus}


HALF_REPORT = HalfReport()


_slow_ready = False


def slow_warm_up():
    """Stands for a heavy import (math-verify): 1.5 s, longer than the tests' 1 s task limit."""
    global _slow_ready
    time.sleep(1.5)
    _slow_ready = True


@register("test_slow_warm")
def needs_warm_up(response, ground_truth, *, prompt=None):
    if not _slow_ready:  # without a warm-up the first call pays for it inside its own time limit
        slow_warm_up()
    return Score(1.0, "warm")


needs_warm_up.warm_up = slow_warm_up
