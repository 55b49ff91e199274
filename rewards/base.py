"""The verifier contract.

A verifier is a pure function `(response, ground_truth, *, prompt=None) -> Score`. It must return in bounded time
on any input and must never evaluate the response as code. `ground_truth` is whatever the row carries for its
dataset: a string for GSM8K/MATH, a dict or JSON string for IFEval.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

# Responses longer than this are truncated before any parsing: bounded work per call.
MAX_RESPONSE_CHARS = 20_000


@dataclass(frozen=True)
class Score:
    """A verdict: `value` in [0, 1] for built-ins (1 = verified), and a short reason for logs and reports."""

    value: float
    reason: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.value, (int, float)) or math.isnan(float(self.value)):
            raise ValueError(f"Score.value must be a real number, got {self.value!r}")


@runtime_checkable
class Verifier(Protocol):
    def __call__(self, response: str, ground_truth: Any, *, prompt: str | None = None) -> Score: ...
