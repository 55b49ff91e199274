"""`rlvr verify`: score a jsonl of responses with a verifier; per-row results, a summary, malformed rows skipped.

    rlvr verify --verifier gsm8k --input responses.jsonl [--response-field response] [--label-field ground_truth]
                [--dataset-field dataset] [--prompt-field prompt] [--out results.jsonl] [--timeout 5] [--workers N]

Each input line is a JSON object with the response and the ground truth (`--label-field`). With `--dataset-field`
each row names its own verifier(s) (`--verifier` is then the fallback for rows without one). Malformed rows (bad
JSON, not an object, missing or non-string response, missing label) are reported with their line number and
skipped. Scoring goes through `rewards.scoring.score_batch` in a time-bounded worker pool.

Per-verifier extensions: HOOKS maps a verifier name to a "module:object" whose object may define
- `add_cli_arguments(parser)`: extra options (called for every hook when the parser is built; keep it import-light),
- `prepare(args, rows) -> rows`: e.g. join responses to a prompts file and fill `row.label` / `row.prompt`,
- `report(args, rows, batch) -> dict[str, float]`: extra summary numbers (printed, and returned in the summary).
"""

from __future__ import annotations

import functools
import importlib
import json
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlvr.utils.logging import get_logger

log = get_logger(__name__)

CHUNK = 256
# verifier name -> "module:object" with optional add_cli_arguments / prepare / report (see module docstring)
HOOKS: dict[str, str] = {"ifeval": "rewards.ifeval.cli:HOOK"}


@dataclass
class Row:
    line: int  # 1-based line number in the input file
    record: dict
    response: Any = None
    label: Any = None
    dataset: Any = None
    prompt: str | None = None


def _hook(name: str | None):
    spec = HOOKS.get((name or "").lower())
    if spec is None:
        return None
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr)


def add_cli_arguments(parser) -> None:
    parser.add_argument("--verifier", default=None,
                        help="verifier name, alias or package.module:function (required unless --dataset-field)")
    parser.add_argument("--input", required=True, help="jsonl file, one object per line")
    parser.add_argument("--response-field", default="response", help="field holding the response (default: response)")
    parser.add_argument("--label-field", default="ground_truth", help="field holding the ground truth")
    parser.add_argument("--dataset-field", default=None, help="field naming each row's verifier(s), if any")
    parser.add_argument("--prompt-field", default="prompt", help="field holding the prompt, passed when present")
    parser.add_argument("--out", default=None, help="write per-row results here (jsonl)")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds per verifier call (default 5)")
    parser.add_argument("--workers", type=int, default=None, help="worker processes (default min(4, CPUs))")
    for name in HOOKS:
        hook = _hook(name)
        if hasattr(hook, "add_cli_arguments"):
            hook.add_cli_arguments(parser)


def read_rows(path: Path) -> tuple[list[Row], list[tuple[int, str]]]:
    """Parse the jsonl file: rows, and (line number, problem) for lines that are not JSON objects."""
    rows, malformed = [], []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                malformed.append((n, f"bad JSON ({err.msg} at column {err.colno})"))
                continue
            if not isinstance(record, dict):
                malformed.append((n, f"not a JSON object but {type(record).__name__}"))
                continue
            rows.append(Row(line=n, record=record))
    return rows, malformed


def fill_fields(args, rows: list[Row]) -> tuple[list[Row], list[tuple[int, str]]]:
    """Take response/label/dataset/prompt from each row's fields; rows missing what scoring needs are malformed."""
    good, malformed = [], []
    for row in rows:
        rec = row.record
        if row.response is None:
            row.response = rec.get(args.response_field)
        if row.label is None:
            row.label = rec.get(args.label_field)
        if row.dataset is None:
            row.dataset = rec.get(args.dataset_field) if args.dataset_field else None
            row.dataset = row.dataset if row.dataset is not None else args.verifier
        if row.prompt is None and isinstance(rec.get(args.prompt_field), str):
            row.prompt = rec[args.prompt_field]
        if not isinstance(row.response, str):
            problem = "missing" if row.response is None else f"not a string ({type(row.response).__name__})"
            malformed.append((row.line, f"response field {args.response_field!r} {problem}"))
        elif row.label is None:
            malformed.append((row.line, f"label field {args.label_field!r} missing"))
        elif row.dataset is None:
            malformed.append((row.line, f"no verifier: field {args.dataset_field!r} missing and no --verifier"))
        else:
            good.append(row)
    return good, malformed


def _category(reason: str) -> str:
    """Group reasons for the summary: the text before the first ':' or '(' ("wrong", "timeout", ...)."""
    head = reason.split(":", 1)[0].split("(", 1)[0].strip()
    return head or "(no reason)"


def cli_main(args) -> int:
    from tqdm import tqdm

    from rewards.bounded import BoundedPool, default_workers
    from rewards.registry import UnknownVerifierError
    from rewards.scoring import merge_batches, resolve_verifiers, score_batch, warm_up_worker

    if args.verifier is None and args.dataset_field is None:
        print("rlvr verify: give --verifier NAME or --dataset-field FIELD", file=sys.stderr)
        return 2
    path = Path(args.input)
    if not path.is_file():
        print(f"rlvr verify: input file {path} not found", file=sys.stderr)
        return 2
    try:
        if args.verifier:
            resolve_verifiers([args.verifier])
    except UnknownVerifierError as err:
        print(f"rlvr verify: {err}", file=sys.stderr)
        return 2

    rows, malformed = read_rows(path)
    hook = _hook(args.verifier)
    if hook is not None and hasattr(hook, "prepare"):
        rows = hook.prepare(args, rows)
    rows, more = fill_fields(args, rows)
    malformed = sorted(malformed + more)
    for line, problem in malformed:
        print(f"{path}:{line}: skipped: {problem}", file=sys.stderr)
    try:
        resolve_verifiers(r.dataset for r in rows)
    except UnknownVerifierError as err:
        print(f"rlvr verify: {err}", file=sys.stderr)
        return 2

    names = sorted({n.lower() for r in rows for n in ([r.dataset] if isinstance(r.dataset, str) else r.dataset)})
    pool = BoundedPool(args.workers or default_workers(), args.timeout, memory_limit_mb=4096,
                       initializer=functools.partial(warm_up_worker, tuple(names)))
    batches = []
    try:
        with tqdm(total=len(rows), desc=f"verify {args.verifier or args.dataset_field}", unit="row",
                  disable=len(rows) < 2 * CHUNK) as bar:
            for start in range(0, len(rows), CHUNK):
                chunk = rows[start:start + CHUNK]
                batches.append(score_batch([r.response for r in chunk], [r.label for r in chunk],
                                           [r.dataset for r in chunk], prompts=[r.prompt for r in chunk],
                                           pool=pool))
                bar.update(len(chunk))
    finally:
        pool.close()
    batch = merge_batches(batches)

    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        failed = {i for i, _, _ in batch.failures}
        with out.open("w", encoding="utf-8") as f:
            for i, (row, score) in enumerate(zip(rows, batch.scores)):
                f.write(json.dumps({"line": row.line, "dataset": row.dataset, "score": score.value,
                                    "reason": score.reason, "failed": i in failed}) + "\n")

    summary = summarize(batch, len(malformed))
    if hook is not None and hasattr(hook, "report"):
        summary.update(hook.report(args, rows, batch))
    print_summary(summary, batch)
    return 0


def summarize(batch, n_malformed: int) -> dict[str, Any]:
    n = len(batch.scores)
    total = sum(batch.values)
    return {"count": n, "score_sum": total, "mean_score": total / n if n else 0.0, "malformed": n_malformed,
            "errors": batch.errors, "timeouts": batch.timeouts}


def print_summary(summary: dict[str, Any], batch) -> None:
    n = summary["count"]
    print(f"rows scored: {n}   malformed/skipped: {summary['malformed']}")
    print(f"score: {summary['score_sum']:g} / {n}   mean {summary['mean_score']:.4f}")
    print(f"errors: {summary['errors']}   timeouts: {summary['timeouts']}")
    for name, st in sorted(batch.per_verifier.items()):
        print(f"  {name}: {st.count} calls, mean {st.mean:.4f}, errors {st.errors}, timeouts {st.timeouts}")
    reasons = Counter(_category(s.reason) for s in batch.scores if s.value <= 0)
    if reasons:
        print("zero-score rows by reason:")
        for reason, count in reasons.most_common():
            print(f"  {count:6d}  {reason}")
    for key, value in summary.items():
        if key not in ("count", "score_sum", "mean_score", "malformed", "errors", "timeouts"):
            print(f"{key}: {value:.4f}" if isinstance(value, float) else f"{key}: {value}")
