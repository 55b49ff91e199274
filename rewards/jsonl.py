"""One strict JSON-lines reader for every tool that must stop at the first bad line (evaluation files, IFEval
prompt files). Loaders that count and skip bad rows instead (RLVR prompt data) have their own."""

from __future__ import annotations

import json
from pathlib import Path


def read_jsonl(path: str | Path) -> list[tuple[int, dict]]:
    """(line number, row) pairs, blank lines skipped; a bad line (not UTF-8, not JSON, not an object) raises
    ValueError naming file and line."""
    rows = []
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise ValueError(f"{path}:{lineno}: not UTF-8 text (byte 0x{raw[err.start]:02x} at column "
                                 f"{err.start + 1})") from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({err})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
            rows.append((lineno, row))
    return rows
