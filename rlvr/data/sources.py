"""Prompt sources read into raw rows, before validation (rlvr.data.prompts): local files, hub datasets,
`procedural:` specs (core.procedural) and the `gsm8k:` conversion of raw GSM8K rows. The forms are listed in
rlvr.data.prompts, as is the `ifeval:` conversion of Google's IFEval rows. JSON-lines files are read by rewards.jsonl in collect mode: a bad line becomes a counted drop
(bad_json, not_an_object), never a crash.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from core import procedural
from core.logging import get_logger
from rewards.jsonl import JsonlError, scan_jsonl

log = get_logger(__name__)

FILE_SUFFIXES = (".jsonl", ".json", ".parquet")
GSM8K_PREFIX = "gsm8k:"
IFEVAL_PREFIX = "ifeval:"
HF_PREFIX = "hf:"
# Same instruction as the procedural GSM8K task, so both kinds of rows ask for the same answer form.
GSM8K_INSTRUCTION = 'Solve the problem step by step, then end your reply with "The answer is <number>."'


class PromptDataError(ValueError):
    """Prompt data cannot be used: the message names the source, file:line examples and the reason."""


@dataclass
class RawRow:
    source: str  # the source string as given (or the file path)
    line: int
    row: dict | None
    error: tuple[str, str] | None = None  # (reason, detail) when the row could not even be parsed

    @property
    def default_id(self) -> str:
        """`<file name>:<line>` for files, `<hub spec>:<row>` for hub rows (used when the row has no "id")."""
        path = Path(self.source)
        label = path.name if path.suffix.lower() in FILE_SUFFIXES else self.source
        return f"{label}:{self.line}"


def _read_jsonl(path: Path, label: str) -> list[RawRow]:
    try:
        rows, bad = scan_jsonl(path, strict=False)  # rewards.jsonl, collect mode
    except JsonlError as err:  # not UTF-8: nothing useful to count
        raise PromptDataError(str(err)) from None
    out = [RawRow(label, lineno, row) for lineno, row in rows]
    out += [RawRow(label, b.line, None, (b.reason, b.detail)) for b in bad]
    return sorted(out, key=lambda r: r.line)


def _read_json(path: Path, label: str) -> list[RawRow]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise PromptDataError(f"{path}:{err.lineno}: not valid JSON ({err.msg}); a .json source must hold a list "
                              "of rows (use .jsonl for one row per line)") from None
    if isinstance(data, dict):
        data = data.get("rows", data.get("data"))
    if not isinstance(data, list):
        raise PromptDataError(f"{path}: a .json source must hold a list of rows (or an object with a 'rows' list)")
    return [RawRow(label, i, row) for i, row in enumerate(data, 1)]


def _read_parquet(path: Path, label: str) -> list[RawRow]:
    import pyarrow.parquet as pq  # lazy: only parquet sources need it

    table = pq.read_table(path)
    return [RawRow(label, i, row) for i, row in enumerate(table.to_pylist(), 1)]


def parse_hub_spec(spec: str) -> tuple[str, str | None, str]:
    """`[hf:]OWNER/NAME[/CONFIG][:SPLIT]` -> (name, config or None, split); split defaults to "train"."""
    body = spec[len(HF_PREFIX):] if spec.startswith(HF_PREFIX) else spec
    name_part, _, split = body.partition(":")
    parts = name_part.split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise PromptDataError(f"prompt source {spec!r}: not a local file and not a hub name of the form "
                              "OWNER/NAME[/CONFIG][:SPLIT]")
    name = "/".join(parts[:2])
    config = parts[2] if len(parts) == 3 else None
    return name, config, split or "train"


def _read_hub(spec: str) -> list[RawRow]:
    import datasets  # lazy: seconds to import, and only hub sources need it

    name, config, split = parse_hub_spec(spec)
    log.info("loading hub dataset %s (config %s, split %s)", name, config, split)
    ds = datasets.load_dataset(name, config, split=split)
    return [RawRow(spec, i, dict(row)) for i, row in enumerate(ds, 1)]


def _read_source(spec: str) -> list[RawRow]:
    """Raw rows of a file or hub source (procedural and gsm8k: prefixes are handled by the caller)."""
    path = Path(spec[len(HF_PREFIX):] if spec.startswith(HF_PREFIX) else spec).expanduser()
    if not spec.startswith(HF_PREFIX) and path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".jsonl":
            return _read_jsonl(path, spec)
        if suffix == ".json":
            return _read_json(path, spec)
        if suffix == ".parquet":
            return _read_parquet(path, spec)
        raise PromptDataError(f"prompt source {spec!r}: unsupported file type {suffix!r}; use one of "
                              f"{', '.join(FILE_SUFFIXES)}")
    if path.suffix.lower() in FILE_SUFFIXES or path.is_dir() or spec.startswith((".", "/", "~")):
        raise PromptDataError(f"prompt source {spec!r}: file not found")
    return _read_hub(spec)


# ---------------------------------------------------------------------------------------------------------------
# GSM8K raw format -> schema.

_FINAL = re.compile(r"####\s*(.+?)\s*$", re.S)


def gsm8k_to_row(row: dict) -> dict:
    """`{"question", "answer": "... #### 1,234"}` -> a schema row with ground_truth "1234". Raises ValueError."""
    question, answer = row.get("question"), row.get("answer")
    if not isinstance(question, str) or not question.strip():
        raise ValueError("no 'question' text")
    if not isinstance(answer, str):
        raise ValueError("no 'answer' text")
    m = _FINAL.search(answer)
    if m is None:
        raise ValueError("answer has no '#### N' final answer")
    final = m.group(1).replace(",", "").strip()
    if not final:
        raise ValueError("empty final answer after '####'")
    out = {"messages": [{"role": "user", "content": f"{question.strip()}\n{GSM8K_INSTRUCTION}"}],
           "ground_truth": final, "dataset": "gsm8k"}
    if "id" in row:
        out["id"] = row["id"]
    return out


def looks_like_gsm8k(raws: list[RawRow]) -> bool:
    first = next((r.row for r in raws if isinstance(r.row, dict)), None)
    return first is not None and "messages" not in first and "question" in first and "answer" in first


# ---------------------------------------------------------------------------------------------------------------
# Google's IFEval format -> schema.

def ifeval_to_row(row: dict) -> dict:
    """Google's `{"key", "prompt", "instruction_id_list", "kwargs"}` (input_data.jsonl, google/IFEval) -> a schema
    row: one user turn with the prompt, the instructions as the "ifeval" verifier's ground truth (null kwargs
    dropped, as Google's evaluator does), id `ifeval-<key>`. Raises ValueError."""
    prompt, ids, kwargs = row.get("prompt"), row.get("instruction_id_list"), row.get("kwargs")
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError("no 'prompt' text")
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
        raise ValueError("'instruction_id_list' must be a non-empty list of instruction ids")
    if not isinstance(kwargs, list) or len(kwargs) != len(ids):
        raise ValueError(f"'kwargs' must be a list with one entry per instruction ({len(ids)})")
    cleaned = [{k: v for k, v in (kw or {}).items() if v is not None} for kw in kwargs]
    out = {"messages": [{"role": "user", "content": prompt}],
           "ground_truth": json.dumps({"instruction_id_list": ids, "kwargs": cleaned}), "dataset": "ifeval"}
    if row.get("key") is not None:
        out["id"] = f"ifeval-{row['key']}"
    return out


def looks_like_ifeval(raws: list[RawRow]) -> bool:
    first = next((r.row for r in raws if isinstance(r.row, dict)), None)
    return first is not None and "messages" not in first and "prompt" in first and "instruction_id_list" in first


def _converter(raws: list[RawRow]) -> Callable[[dict], dict] | None:
    if looks_like_gsm8k(raws):
        return gsm8k_to_row
    if looks_like_ifeval(raws):
        return ifeval_to_row
    return None


def load_source(spec: str) -> tuple[list[RawRow], Callable[[dict], dict] | None]:
    """The raw rows of one source string, and the converter to the schema they need (gsm8k_to_row or None)."""
    if procedural.is_procedural_spec(spec):
        try:
            rows = procedural.load_procedural(spec)
        except ValueError as err:
            raise PromptDataError(f"prompt source {spec!r}: {err}") from None
        return [RawRow(spec, i, row) for i, row in enumerate(rows, 1)], None
    for prefix, converter in ((GSM8K_PREFIX, gsm8k_to_row), (IFEVAL_PREFIX, ifeval_to_row)):
        if spec.startswith(prefix):
            inner = spec[len(prefix):]
            if not inner:
                raise PromptDataError(f"prompt source {spec!r}: expected {prefix}FILE_OR_HUB_NAME")
            return _read_source(inner), converter
    raws = _read_source(spec)
    return raws, _converter(raws)
