"""MATH answer checker: math-verify for equivalence, every call bounded from outside in a killable worker.

Registered as `math` (also `math_500`, `minerva_math`, `hendrycks_math`; names are case-insensitive, so the Tulu 3
RLVR rows' `MATH` works).

- math-verify 0.9's own timeouts use SIGALRM (they fail off the main thread and cannot stop C-level hangs), so we
  call `parse(..., parsing_timeout=None)` and `verify(..., timeout_seconds=None)` and bound each check from the
  outside: in a `rewards.bounded.BoundedPool` worker (module-level, created on first use; limit
  $RLVR_MATH_TIMEOUT_S, default 5 s; workers $RLVR_REWARD_WORKERS; memory cap $RLVR_VERIFIER_MEMORY_MB, default
  2048 MB; or call `configure(...)`). Called inside a BoundedPool worker already (as `rewards.scoring` does) the
  check runs inline and the outer pool's limit bounds it.
- A timed-out or crashed check scores 0 with the reason; the worker is killed and replaced. An unparseable ground
  truth raises ValueError (a data error).
- Inputs are capped: the response keeps its last MAX_RESPONSE_CHARS characters (the answer is at the end), the
  ground truth its first 1,000.
- The ground truth is wrapped in `$...$` unless it already has `$` or `\\boxed`, so a plain-text gold like `1-1/e`
  parses as a whole (unwrapped, math-verify reads only its leading `1`: the known `1-1/e` vs `1+1/e` false positive).
- Numeric cross-check: when math-verify says "equal" and both answers are numbers, they must also agree to a
  relative 1e-4 at 30 digits; this fixes the known `1/2^99` vs `1/2^98` false positive (math-verify compares
  numbers after rounding to 6 decimals). Answers written with `%` are exempt (math-verify deliberately lets `72%`
  match `72`).
"""

from __future__ import annotations

import os
import threading

from rewards.base import MAX_RESPONSE_CHARS, Score
from rewards.bounded import BoundedPool, default_workers, in_worker
from rewards.registry import register

MAX_GROUND_TRUTH_CHARS = 1_000
DEFAULT_TIMEOUT_S = 5.0
DEFAULT_MEMORY_MB = 2048
_REL_TOL = "1e-4"

_pool: BoundedPool | None = None
_pool_lock = threading.Lock()


def _warm_up() -> None:
    """Worker initializer: import math-verify (and sympy, antlr) and silence its 'timeouts disabled' warning."""
    # lazy (here and below): math-verify, sympy and antlr take seconds and run only in the bounded scoring
    # workers; `rewards` itself stays quick to import
    import math_verify.grader
    import math_verify.parser

    math_verify.parser.TIMEOUT_WARNING_SHOWN = True
    math_verify.grader.TIMEOUT_WARNING_SHOWN = True
    check_equivalence("\\boxed{1/2}", "0.5")


def configure(timeout_s: float | None = None, num_workers: int | None = None,
              memory_limit_mb: int | None = None) -> BoundedPool:
    """(Re)create the MATH worker pool with these settings (env vars / defaults for what is not given)."""
    global _pool
    timeout_s = timeout_s if timeout_s is not None else float(os.environ.get("RLVR_MATH_TIMEOUT_S", DEFAULT_TIMEOUT_S))
    num_workers = num_workers or default_workers()
    if memory_limit_mb is None:
        memory_limit_mb = int(os.environ.get("RLVR_VERIFIER_MEMORY_MB", DEFAULT_MEMORY_MB))
    new = BoundedPool(num_workers, timeout_s, memory_limit_mb=memory_limit_mb or None, initializer=_warm_up,
                      max_tasks_per_worker=10_000)
    with _pool_lock:
        old, _pool = _pool, new
    if old is not None:
        old.close()
    return new


def math_pool() -> BoundedPool:
    """The module's shared pool, created on first use."""
    with _pool_lock:
        pool = _pool
    return pool if pool is not None else configure()


def _wrap_gold(ground_truth: str) -> str:
    gt = ground_truth.strip()
    return gt if ("$" in gt or "\\boxed" in gt) else f"${gt}$"


def _numerically_different(gold, pred) -> bool:
    """True if both are plain numbers that differ by more than a relative 1e-4 (at 30 significant digits)."""
    from sympy import Expr, Float  # lazy: see _warm_up

    if not (isinstance(gold, Expr) and isinstance(pred, Expr) and gold.is_number and pred.is_number):
        return False
    g, p = gold.evalf(30), pred.evalf(30)
    diff, scale = abs(g - p), max(abs(g), abs(p))
    if not (diff.is_comparable and scale.is_comparable):  # nan / complex infinity: leave it to math-verify
        return False
    return bool(diff > Float(_REL_TOL) * scale)


def check_equivalence(response: str, ground_truth: str) -> tuple[bool, str]:
    """math-verify's verdict plus our numeric cross-check, unbounded: call it only inside a bounded worker."""
    from math_verify import parse, verify  # lazy: see _warm_up

    gold = parse(_wrap_gold(ground_truth), parsing_timeout=None)
    if not gold:
        raise ValueError(f"MATH ground truth {ground_truth[:80]!r} could not be parsed")
    pred = parse(response, parsing_timeout=None)
    if not pred:
        return False, "no answer found"
    if not verify(gold, pred, timeout_seconds=None):
        return False, f"wrong: got {str(pred[-1])[:40]!r}, expected {str(gold[-1])[:40]!r}"
    has_percent = any("%" in x for x in (*gold, *pred) if isinstance(x, str))
    if not has_percent and _numerically_different(gold[0], pred[0]):
        return False, f"wrong: {str(pred[-1])[:40]!r} differs numerically from {str(gold[-1])[:40]!r}"
    return True, "correct"


@register("math", "math_500", "minerva_math", "hendrycks_math")
def verify_math(response: str, ground_truth: str, *, prompt: str | None = None) -> Score:
    """1.0 if math-verify finds the response's answer equivalent to the ground truth, else 0.0 with the reason."""
    if not isinstance(response, str):
        raise TypeError(f"response must be a string, got {type(response).__name__}")
    if isinstance(ground_truth, int | float) and not isinstance(ground_truth, bool):
        ground_truth = str(ground_truth)
    if not isinstance(ground_truth, str):
        raise ValueError(f"MATH ground truth must be a string, got {type(ground_truth).__name__}")
    response, ground_truth = response[-MAX_RESPONSE_CHARS:], ground_truth[:MAX_GROUND_TRUTH_CHARS]
    if in_worker():
        ok, detail = check_equivalence(response, ground_truth)
        return Score(1.0 if ok else 0.0, detail)
    pool = math_pool()
    outcome = pool.map(check_equivalence, [(response, ground_truth)])[0]
    if outcome.ok:
        ok, detail = outcome.value
        return Score(1.0 if ok else 0.0, detail)
    if outcome.status == "error" and outcome.message.startswith("ValueError: MATH ground truth"):
        raise ValueError(outcome.message.removeprefix("ValueError: "))
    return Score(0.0, f"math-verify {outcome.status}: {outcome.message}")


verify_math.warm_up = _warm_up  # type: ignore[attr-defined]  # run once per scoring worker, outside time limits
