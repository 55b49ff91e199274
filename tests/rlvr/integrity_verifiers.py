"""Verifiers for tests/test_run_integrity.py (module-level, so scoring workers can import them)."""

from __future__ import annotations

from rewards.base import Score


def huge(response, ground_truth, *, prompt=None):
    return Score(1e30, "far outside [0, 1]")


def plus_minus_one(response, ground_truth, *, prompt=None):
    return Score(-1.0, "wrong (a +-1 scorer)")


plus_minus_one.value_range = (-1.0, 1.0)
