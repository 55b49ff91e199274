"""The one JSON-lines reader of the project, in two modes:

- strict (`read_jsonl`, or `scan_jsonl(strict=True)`): the first bad line raises `JsonlError` naming file and line
  (evaluation files, IFEval prompt files, SFT/DPO data, contamination sources);
- collect (`scan_jsonl(strict=False)`): bad lines are returned as `BadLine(line, reason, detail)` beside the good
  rows, for loaders that count and skip them (RLVR prompt data, `rlvr verify`).
A line that is not UTF-8 raises in both modes (the file is in another encoding: nothing useful to skip). Blank lines
are skipped; `.gz` files are read through gzip.

It lives in `rewards` because `rewards` is the bottom layer, importable without torch and installable alone
(`packages/smoltulu-rewards`): `core`, `sft_dpo` and `rlvr` use it from here, and `rewards` imports nothing of
theirs.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class JsonlError(ValueError):
    """A line that cannot be read (strict mode), or is not UTF-8 (either mode); the message names file:line."""


@dataclass(frozen=True)
class BadLine:
    line: int  # 1-based
    reason: str  # "bad_json" | "not_an_object"
    detail: str  # e.g. "bad JSON (Expecting value at column 1)", "not a JSON object but list"


def text_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of every line of a text file (`.gz` through gzip); a line that is not UTF-8 raises
    JsonlError naming file, line, byte and column."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                yield lineno, raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise JsonlError(f"{path}:{lineno}: not UTF-8 text (byte 0x{raw[err.start]:02x} at column "
                                 f"{err.start + 1})") from None


def scan_jsonl(path: str | Path, *, strict: bool = True, objects_only: bool = True
               ) -> tuple[list[tuple[int, Any]], list[BadLine]]:
    """(rows as (line number, value), bad lines). `objects_only`: a value that is not a JSON object is a bad line
    (reason not_an_object); without it such values are rows, for callers that report them themselves. In strict
    mode the list of bad lines is always empty: the first one raises JsonlError."""
    rows: list[tuple[int, Any]] = []
    bad: list[BadLine] = []
    for lineno, line in text_lines(path):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as err:
            if strict:
                raise JsonlError(f"{path}:{lineno}: not valid JSON ({err.msg} at column {err.colno})") from None
            bad.append(BadLine(lineno, "bad_json", f"bad JSON ({err.msg} at column {err.colno})"))
            continue
        if objects_only and not isinstance(value, dict):
            if strict:
                raise JsonlError(f"{path}:{lineno}: expected a JSON object, got {type(value).__name__}")
            bad.append(BadLine(lineno, "not_an_object", f"not a JSON object but {type(value).__name__}"))
            continue
        rows.append((lineno, value))
    return rows, bad


def read_jsonl(path: str | Path) -> list[tuple[int, dict]]:
    """Strict mode: (line number, row) pairs of JSON objects; a bad line raises JsonlError naming file and line."""
    return scan_jsonl(path, strict=True)[0]
