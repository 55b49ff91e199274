"""The `verify` command: score a jsonl of responses with a verifier; per-row results, a summary.

    rlvr verify --verifier gsm8k --input responses.jsonl [--response-field response] [--label-field ground_truth]
                [--dataset-field dataset] [--prompt-field prompt] [--out results.jsonl] [--timeout 5] [--workers N]
                [--import mypkg.verifiers ...] [--format rows|google]

The same command is `rlvr-verify ...` (or `python -m rewards ...`) where only the light install (`rewards` alone,
no torch) is present. Each input line is a JSON object with the response and the ground truth (`--label-field`).
With `--dataset-field` each row names its own verifier(s) (`--verifier` is then the fallback for rows without
one). `--import MODULE` (repeatable) imports a module first, so verifiers it registers with `@register` can be
named. Scoring goes through `rewards.scoring.score_batch` in a time-bounded worker pool.

Rows that cannot be scored (bad JSON, not an object, missing or non-string response, missing label) are reported
with their line number and skipped. Errors that make the whole run meaningless stop it with one line on stderr and
exit code 2: a field missing from every row (the message lists the fields the rows do have), a line that is not
UTF-8, an unknown or broken verifier, a bad option value. Exit code 1: every scored row failed (errors or
timeouts), or the output pipe was closed early (`| head`). Exit code 0 otherwise.

Per-verifier extensions: HOOKS maps a verifier name to a "module:object" whose object may define
- `add_cli_arguments(parser)`: extra options (called for every hook when the parser is built; keep it import-light),
- `prepare(args, rows) -> rows`: e.g. join responses to a prompts file and fill `row.label` / `row.prompt`,
- `annotate(args, rows, pool)`: fill `row.details` (a dict added to the row's `--out` line), using `pool` for any
  verifier work so that it stays time-bounded,
- `report(args, rows, batch) -> dict[str, float]`: extra summary numbers (printed, and returned in the summary),
- `write_format(args, rows, fmt, out_dir) -> list[Path]`: write `--format FMT` files (e.g. IFEval's "google").
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import logging
import os
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from rewards.bounded import BoundedPool, default_workers
from rewards.jsonl import JsonlError, scan_jsonl
from rewards.registry import UnknownVerifierError
from rewards.scoring import merge_batches, resolve_verifiers, score_batch, warm_up_worker

CHUNK = 256
# verifier name -> "module:object" with optional hook methods (see module docstring)
HOOKS: dict[str, str] = {"ifeval": "rewards.ifeval.cli:HOOK", "code": "rewards.code:HOOK",
                         "code_fraction": "rewards.code:HOOK"}
FORMATS = ("rows", "google")


class InputError(Exception):
    """Bad input for the whole run: reported as one line, exit code 2."""


@dataclass
class Row:
    line: int  # 1-based line number in the input file
    record: dict
    response: Any = None
    label: Any = None
    dataset: Any = None
    prompt: str | None = None
    details: dict = field(default_factory=dict)  # hook-provided extra fields for the --out line


def _hook(name: str | None):
    spec = HOOKS.get((name or "").lower())
    if spec is None:
        return None
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr)


def _positive(kind):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a{'n integer' if kind is int else ' number'}") from None
        if not value > 0 or value != value:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    parse.__name__ = f"positive {kind.__name__}"
    return parse


def add_cli_arguments(parser) -> None:
    parser.add_argument("--verifier", default=None,
                        help="verifier name, alias or package.module:function (required unless --dataset-field)")
    parser.add_argument("--input", required=True, help="jsonl file, one object per line")
    parser.add_argument("--response-field", default="response", help="field holding the response (default: response)")
    parser.add_argument("--label-field", default="ground_truth", help="field holding the ground truth")
    parser.add_argument("--dataset-field", default=None, help="field naming each row's verifier(s), if any")
    parser.add_argument("--prompt-field", default="prompt", help="field holding the prompt, passed when present")
    parser.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                        help="import MODULE first (repeatable), e.g. one whose @register verifiers you name; "
                             "found as `python -m` would (current directory first)")
    parser.add_argument("--out", default=None,
                        help="--format rows: write per-row results to this jsonl; --format google: a directory")
    parser.add_argument("--format", default="rows", choices=FORMATS,
                        help="rows (default): one result line per input row; google (IFEval): --out DIR gets "
                             "eval_results_strict.jsonl and eval_results_loose.jsonl as Google's evaluation_main")
    parser.add_argument("--timeout", type=_positive(float), default=5.0, help="seconds per verifier call (default 5)")
    parser.add_argument("--workers", type=_positive(int), default=None, help="worker processes (default min(4, CPUs))")
    for name in HOOKS:
        hook = _hook(name)
        if hasattr(hook, "add_cli_arguments"):
            hook.add_cli_arguments(parser)


def read_rows(path: Path) -> tuple[list[Row], list[tuple[int, str]]]:
    """Parse the jsonl file (rewards.jsonl, collect mode): rows, and (line number, problem) for lines that are not
    JSON objects. A line that is not UTF-8 raises InputError naming file and line (the file is in another encoding:
    nothing useful to skip)."""
    try:
        records, bad = scan_jsonl(path, strict=False)
    except JsonlError as err:
        raise InputError(f"{err}; convert the file to UTF-8") from None
    return [Row(line=n, record=record) for n, record in records], [(b.line, b.detail) for b in bad]


def check_fields_exist(args, rows: list[Row], path: Path) -> None:
    """A field that no row has is a wrong option, not a thousand malformed rows: InputError listing what exists."""
    if not rows:
        return
    needed = [("--response-field", args.response_field, lambda r: r.response is None)]
    needed.append(("--label-field", args.label_field, lambda r: r.label is None))
    if args.dataset_field and not args.verifier:
        needed.append(("--dataset-field", args.dataset_field, lambda r: r.dataset is None))
    present = Counter(k for r in rows for k in r.record)
    for option, name, unfilled in needed:
        if all(unfilled(r) and name not in r.record for r in rows):
            fields = ", ".join(sorted(present)[:30]) or "(none)"
            raise InputError(f"no row of {path} has the field {name!r} ({option}); the rows' fields are: {fields}")


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


def import_modules(modules: list[str]) -> None:
    if modules and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # as `python -m`: a module next to the user's data is found
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise InputError(f"--import {module}: {err}") from None


def cli_main(args) -> int:
    """Run the command; bad input is one line on stderr (exit 2), a closed output pipe too (exit 1)."""
    prog = getattr(args, "prog", None) or "rlvr verify"
    try:
        code = _run(args)
        sys.stdout.flush()  # a closed pipe surfaces here, not at interpreter exit
        return code
    except InputError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)  # nothing more can reach the reader; keep exit quiet
        os.dup2(devnull, sys.stdout.fileno())
        try:
            print(f"{prog}: output closed early (broken pipe); --out files, if any, are complete", file=sys.stderr)
        except OSError:
            pass
        return 1


def _run(args) -> int:
    if args.verifier is None and args.dataset_field is None:
        raise InputError("give --verifier NAME or --dataset-field FIELD")
    if args.format != "rows" and not args.out:
        raise InputError(f"--format {args.format} writes files: give --out DIR")
    path = Path(args.input)
    if not path.is_file():
        raise InputError(f"input file {path} not found")
    import_modules(args.imports)
    try:
        if args.verifier:
            resolve_verifiers([args.verifier], load=True)
        rows, malformed = read_rows(path)
        hook = _hook(args.verifier)
        if hook is not None and hasattr(hook, "prepare"):
            rows = hook.prepare(args, rows)
        for row in rows:  # so that check_fields_exist sees what a hook filled in
            row.response = row.response if row.response is not None else row.record.get(args.response_field)
            row.label = row.label if row.label is not None else row.record.get(args.label_field)
            if args.dataset_field:
                row.dataset = row.dataset if row.dataset is not None else row.record.get(args.dataset_field)
        check_fields_exist(args, rows, path)
        rows, more = fill_fields(args, rows)
        resolve_verifiers(_names(rows), load=True)  # malformed dataset values are score_batch's row errors
    except (UnknownVerifierError, ValueError) as err:  # unknown/broken verifier, bad prompts file for a hook
        raise InputError(str(err)) from None
    malformed = sorted(malformed + more)
    for line, problem in malformed:
        print(f"{path}:{line}: skipped: {problem}", file=sys.stderr)
    if not rows:
        raise InputError(f"no row of {path} could be scored" + (" (the file is empty)" if not malformed else ""))

    batch = _score(args, rows, hook)
    if args.out and args.format == "rows":
        write_rows(Path(args.out), rows, batch)
    elif args.out:
        if hook is None or not hasattr(hook, "write_format"):
            raise InputError(f"--format {args.format} is not available for verifier {args.verifier!r}")
        try:
            written = hook.write_format(args, rows, args.format, Path(args.out))
        except ValueError as err:
            raise InputError(str(err)) from None
        for path_written in written:
            print(f"wrote {path_written}")
    summary = summarize(batch, len(malformed))
    if hook is not None and hasattr(hook, "report"):
        summary.update(hook.report(args, rows, batch))
    print_summary(summary, batch)
    failed = len({i for i, _, _ in batch.failures})
    return 1 if failed == len(rows) else 0


def _names(rows: list[Row]) -> list[str]:
    """The verifier names the rows ask for (a name, or a list of names per row; anything else is left for
    score_batch to report as that row's error)."""
    out = []
    for row in rows:
        if isinstance(row.dataset, str):
            out.append(row.dataset)
        elif isinstance(row.dataset, list) and all(isinstance(d, str) for d in row.dataset):
            out.extend(row.dataset)
    return out


def _score(args, rows: list[Row], hook):
    names = sorted({n.lower() for n in _names(rows)})
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
        if hook is not None and hasattr(hook, "annotate"):
            hook.annotate(args, rows, pool)
    finally:
        pool.close()
    return merge_batches(batches)


def write_rows(out: Path, rows: list[Row], batch) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    failed = {i for i, _, _ in batch.failures}
    with out.open("w", encoding="utf-8") as f:
        for i, (row, score) in enumerate(zip(rows, batch.scores)):
            f.write(json.dumps({"line": row.line, "dataset": row.dataset, "score": score.value,
                                "reason": score.reason, "failed": i in failed, **row.details}) + "\n")


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


def build_parser(prog: str = "rlvr-verify") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Score a jsonl of responses with a verifier.")
    add_cli_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """`rlvr-verify` / `python -m rewards`: the command without the rest of the project."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname).1s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    args.prog = "rlvr-verify"
    return cli_main(args)
