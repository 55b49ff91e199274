"""Batch scoring: the one entry point the RL driver, `rlvr verify` and the trainer adapters use.

    from rewards.scoring import score_batch, check_error_budget, resolve_verifiers

    resolve_verifiers(dataset_names)               # at start-up: UnknownVerifierError listing the known names
    batch = score_batch(responses, ground_truths, datasets, prompts=None, weights={"ifeval": 0.5})
    batch.values                                   # list[float], one per sample
    batch.scores[i]                                # Score(value, reason)
    batch.metrics()                                # {"reward/gsm8k/mean": ..., "reward/errors": ..., ...}
    check_error_budget(batch, max_error_fraction=0.1)   # raises RewardErrorBudgetExceeded

Rows and verifiers: `datasets[i]` names the row's verifier (case-insensitive registry name, alias, or
`module:function`). A row may name several: `datasets[i]` a list and `ground_truths[i]` a list aligned with it.
The sample's value is the weighted SUM of its verifiers' values (`weights[name]`, default 1.0; the open-instruct
convention), its reason the verifiers' reasons joined.

Every verifier call runs in a `rewards.bounded.BoundedPool` worker, bounded by `timeout_s` (default: the pool's;
the shared default pool uses $RLVR_REWARD_TIMEOUT_S, else 5 s). A verifier's heavy dependencies load only where it
is used: its `warm_up` attribute (MATH: math-verify and sympy; IFEval: NLTK and langdetect data) runs once per
worker before that worker's first call of it, outside the call's limit, so GSM8K-only scoring never imports
math-verify. Verifiers must live in importable modules (workers never re-run the script `__main__`).
Failures never raise and never vanish
(RELIABILITY.md items 4-5):
- a verifier that raises, returns NaN/inf, a value outside its range ([0, 1] unless it declares `value_range`),
  or something that is neither a Score nor a real number, a crashed worker, or a malformed row (dataset list not aligned with its ground truths): that call scores 0 with
  the reason, counted in `errors` (per sample) and in its verifier's `errors`;
- a call past the limit: its worker is killed and replaced, the call scores 0, counted in `timeouts`.
`check_error_budget` turns "too many failed samples" into an exception, so a run stops instead of training on
zeros. An unknown verifier name raises UnknownVerifierError before anything runs (a configuration error).
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rewards.base import Score
from rewards.bounded import BoundedPool, Outcome, default_workers, in_worker
from rewards.registry import UnknownVerifierError, get_verifier, known_verifiers, load_verifier

DEFAULT_TIMEOUT_S = 5.0
DEFAULT_MEMORY_MB = 4096

_pool: BoundedPool | None = None
_pool_lock = threading.Lock()


@dataclass(frozen=True)
class VerifierStats:
    """One verifier over one batch: calls, mean value (failed calls count as 0), failures."""

    count: int
    mean: float
    errors: int
    timeouts: int


@dataclass(frozen=True)
class BatchScores:
    scores: list[Score]
    per_verifier: dict[str, VerifierStats]
    errors: int  # samples with at least one erroring verifier call
    timeouts: int  # samples with at least one timed-out call
    failures: list[tuple[int, str, str]] = field(default_factory=list)  # (sample index, verifier, reason)

    @property
    def values(self) -> list[float]:
        return [s.value for s in self.scores]

    @property
    def failed_fraction(self) -> float:
        """Fraction of samples with at least one error or timeout."""
        failed = {i for i, _, _ in self.failures}
        return len(failed) / len(self.scores) if self.scores else 0.0

    def metrics(self, prefix: str = "reward") -> dict[str, float]:
        out: dict[str, float] = {
            f"{prefix}/mean": sum(self.values) / len(self.scores) if self.scores else 0.0,
            f"{prefix}/errors": float(self.errors),
            f"{prefix}/timeouts": float(self.timeouts),
            f"{prefix}/failed_fraction": self.failed_fraction,
        }
        for name, st in sorted(self.per_verifier.items()):
            out[f"{prefix}/{name}/mean"] = st.mean
            out[f"{prefix}/{name}/count"] = float(st.count)
        return out


class RewardErrorBudgetExceeded(RuntimeError):
    """More than the allowed fraction of a batch failed to score."""


def check_error_budget(batch: BatchScores, max_error_fraction: float) -> None:
    """Raise if more than `max_error_fraction` of the samples had an error or timeout (examples in the message)."""
    frac = batch.failed_fraction
    if frac > max_error_fraction:
        examples = "; ".join(f"sample {i} ({name}): {reason}" for i, name, reason in batch.failures[:3])
        raise RewardErrorBudgetExceeded(
            f"{frac:.1%} of {len(batch.scores)} samples failed to score (errors {batch.errors}, timeouts "
            f"{batch.timeouts}), above the allowed {max_error_fraction:.1%}. First failures: {examples}"
        )


def resolve_verifiers(names, *, load: bool = False) -> dict[str, Any]:
    """Look up every distinct verifier name (strings or lists of strings); UnknownVerifierError on the first bad one.

    A verifier defined in the running script (`__main__`) is refused: pool workers never re-run that script, so
    they could not load it. `load=True` also imports plug-ins registered by entry point now (set-up time), so a
    broken one fails here rather than on its first call."""
    out: dict[str, Any] = {}
    for entry in names:
        for name in [entry] if isinstance(entry, str) else entry:
            key = str(name).lower()
            if key not in out:
                fn = load_verifier(str(name)) if load else get_verifier(str(name))
                _refuse_main(str(name), fn)
                out[key] = fn
    return out


def _refuse_main(name: str, fn: Any) -> None:
    target = getattr(fn, "func", fn)  # functools.partial
    if getattr(target, "__module__", None) == "__main__":
        raise UnknownVerifierError(
            f"verifier {name!r} is defined in the script being run (__main__); scoring runs in worker processes "
            "that do not re-run that script, so move the verifier into a module and import it from there")


def warm_up_worker(names: Sequence[str] | None = None) -> None:
    """Scoring-worker initializer: load the registry (built-ins and plug-in entry points), and when `names` is
    given, run those verifiers' warm-ups now (their `warm_up` attribute: math-verify's imports for MATH, NLTK and
    langdetect data for IFEval). Without `names`, heavy dependencies load on the first task that needs them, as a
    per-task warm-up outside that task's time limit (see `score_batch`)."""
    known_verifiers()
    done = set()
    for name in names or ():
        try:
            warm = getattr(get_verifier(name), "warm_up", None)
        except UnknownVerifierError:  # registered by decorator in a module this worker has not imported yet
            continue
        if warm is not None and warm not in done:
            warm()
            done.add(warm)


def check_environment() -> dict[str, float]:
    """Validate the scoring environment variables now (trainer adapters call this when they are set up), so a
    bad value fails at start-up instead of on every reward call. Returns the parsed values."""
    specs = {"RLVR_REWARD_TIMEOUT_S": (float, DEFAULT_TIMEOUT_S, 0.0), "RLVR_REWARD_WORKERS": (int, 1, 1),
             "RLVR_VERIFIER_MEMORY_MB": (int, DEFAULT_MEMORY_MB, 0), "RLVR_MATH_TIMEOUT_S": (float, 5.0, 0.0)}
    values: dict[str, float] = {}
    for var, (kind, default, low) in specs.items():
        raw = os.environ.get(var)
        try:
            value = kind(raw) if raw not in (None, "") else default
        except ValueError:
            raise ValueError(f"${var}={raw!r} is not a{'n integer' if kind is int else ' number'}") from None
        if not math.isfinite(value) or value < low or (kind is float and value == 0):
            raise ValueError(f"${var}={raw!r} must be {'> 0' if kind is float else f'>= {low}'}")
        values[var] = value
    return values


def scoring_pool() -> BoundedPool:
    """The shared pool used when `score_batch` gets no pool (created on first use; $RLVR_REWARD_WORKERS,
    $RLVR_REWARD_TIMEOUT_S, $RLVR_VERIFIER_MEMORY_MB)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            env = check_environment()
            timeout_s, memory = env["RLVR_REWARD_TIMEOUT_S"], int(env["RLVR_VERIFIER_MEMORY_MB"])
            _pool = BoundedPool(default_workers(), timeout_s, memory_limit_mb=memory or None,
                                initializer=warm_up_worker, max_tasks_per_worker=10_000)
        return _pool


def run_verifier(fn, response: Any, ground_truth: Any, prompt: str | None) -> tuple[float, str]:
    """Call one verifier and validate what it returns (runs inside a pool worker)."""
    result = fn(response, ground_truth, prompt=prompt)
    if isinstance(result, Score):
        value, reason = result.value, result.reason
    elif isinstance(result, int | float):
        value, reason = result, ""
    else:
        raise TypeError(f"verifier returned {type(result).__name__}, expected Score or a number")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"verifier returned a non-finite value {value}")
    low, high = value_range(fn)
    if not low <= value <= high:
        raise ValueError(f"verifier returned {value:g}, outside its range [{low:g}, {high:g}]")
    return value, str(reason)


def value_range(fn) -> tuple[float, float]:
    """The values a verifier may return: its `value_range` attribute (e.g. (-1.0, 1.0) for verl's DAPO scorer),
    else [0, 1]. A value outside is an error, counted like an exception."""
    target = getattr(fn, "_fn", None) or getattr(fn, "func", fn)  # a loaded entry-point plug-in; functools.partial
    low, high = getattr(fn, "value_range", None) or getattr(target, "value_range", None) or (0.0, 1.0)
    return float(low), float(high)


def _calls_for_row(dataset: Any, ground_truth: Any) -> tuple[list[tuple[str, Any]], str | None]:
    """The (verifier name, ground truth) calls a row asks for, or an error message for a malformed row."""
    if isinstance(dataset, str):
        return [(dataset.lower(), ground_truth)], None
    if isinstance(dataset, Sequence) and dataset and all(isinstance(d, str) for d in dataset):
        if not isinstance(ground_truth, Sequence) or isinstance(ground_truth, str) or len(ground_truth) != len(dataset):
            return [], f"row names {len(dataset)} verifiers but its ground_truth is not a list of that length"
        return [(d.lower(), g) for d, g in zip(dataset, ground_truth)], None
    return [], f"dataset must be a name or a non-empty list of names, got {dataset!r}"[:200]


def score_batch(responses: Sequence[Any], ground_truths: Sequence[Any], datasets: Sequence[Any], *,
                prompts: Sequence[str | None] | None = None, weights: Mapping[str, float] | None = None,
                pool: BoundedPool | None = None, timeout_s: float | None = None) -> BatchScores:
    """Score each response against its row's ground truth with the row's verifier(s). See the module docstring."""
    n = len(responses)
    if len(ground_truths) != n or len(datasets) != n or (prompts is not None and len(prompts) != n):
        raise ValueError(f"score_batch: {n} responses but {len(ground_truths)} ground truths, {len(datasets)} "
                         f"datasets, {'no' if prompts is None else len(prompts)} prompts")
    weights = {k.lower(): float(v) for k, v in (weights or {}).items()}
    row_calls: list[list[tuple[str, Any]]] = []
    row_errors: dict[int, str] = {}
    for i in range(n):
        calls, err = _calls_for_row(datasets[i], ground_truths[i])
        row_calls.append(calls)
        if err:
            row_errors[i] = err
    verifiers = resolve_verifiers(name for calls in row_calls for name, _ in calls)

    tasks, owners, warm_ups = [], [], []  # one task per (row, verifier) call
    for i, calls in enumerate(row_calls):
        prompt = None if prompts is None else prompts[i]
        for name, gt in calls:
            tasks.append((verifiers[name], responses[i], gt, prompt))
            owners.append((i, name))
            warm_ups.append(getattr(verifiers[name], "warm_up", None))
    if in_worker():  # already bounded from outside: don't nest pools
        outcomes = [_inline(args) for args in tasks]
    elif tasks:
        outcomes = (pool or scoring_pool()).map(run_verifier, tasks, timeout_s=timeout_s, warm_ups=warm_ups)
    else:
        outcomes = []

    totals = [0.0] * n
    reasons: list[list[str]] = [[] for _ in range(n)]
    failures: list[tuple[int, str, str]] = [(i, "-", msg) for i, msg in row_errors.items()]
    err_rows, timeout_rows = set(row_errors), set()
    acc: dict[str, list[float]] = {}
    for (i, name), out in zip(owners, outcomes):
        st = acc.setdefault(name, [0, 0.0, 0, 0])  # count, sum, errors, timeouts
        st[0] += 1
        if out.ok:
            value, reason = out.value
            totals[i] += weights.get(name, 1.0) * value
            st[1] += value
        else:
            reason = f"{out.status}: {out.message}"
            failures.append((i, name, reason))
            if out.status == "timeout":
                st[3] += 1
                timeout_rows.add(i)
            else:
                st[2] += 1
                err_rows.add(i)
        reasons[i].append(reason if len(row_calls[i]) == 1 else f"{name}: {reason}")
    for i, msg in row_errors.items():
        reasons[i].append(f"error: {msg}")
    per_verifier = {name: VerifierStats(count=int(c), mean=s / c if c else 0.0, errors=int(e), timeouts=int(t))
                    for name, (c, s, e, t) in acc.items()}
    scores = [Score(totals[i], "; ".join(reasons[i])) for i in range(n)]
    failures.sort(key=lambda f: f[0])
    return BatchScores(scores, per_verifier, errors=len(err_rows), timeouts=len(timeout_rows), failures=failures)


def merge_batches(batches: Sequence[BatchScores]) -> BatchScores:
    """One BatchScores for consecutive batches (sample indices renumbered, per-verifier stats combined)."""
    scores: list[Score] = []
    failures: list[tuple[int, str, str]] = []
    acc: dict[str, list[float]] = {}
    errors = timeouts = 0
    for b in batches:
        failures += [(i + len(scores), name, reason) for i, name, reason in b.failures]
        scores += b.scores
        errors, timeouts = errors + b.errors, timeouts + b.timeouts
        for name, st in b.per_verifier.items():
            a = acc.setdefault(name, [0, 0.0, 0, 0])
            a[0] += st.count
            a[1] += st.mean * st.count
            a[2] += st.errors
            a[3] += st.timeouts
    per_verifier = {name: VerifierStats(int(c), s / c if c else 0.0, int(e), int(t))
                    for name, (c, s, e, t) in acc.items()}
    return BatchScores(scores, per_verifier, errors=errors, timeouts=timeouts, failures=failures)


def _inline(args: tuple) -> Outcome:
    try:
        return Outcome("ok", value=run_verifier(*args))
    except Exception as err:  # noqa: BLE001 - same contract as the pool: a failing verifier is an error outcome
        return Outcome("error", message=f"{type(err).__name__}: {err}"[:500])
