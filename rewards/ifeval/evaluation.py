"""Strict and loose IFEval scoring of one response, accuracies over many, and scoring a responses file.

Semantics of Google's `evaluation_lib.py`:
- strict: an instruction is followed when the response is not blank and its checker accepts the response;
- loose: when its checker accepts any non-blank one of eight variants — the response, the response without its
  first line, without its last line, without both (each stripped), and those four with every `*` removed;
- prompt level: all of a prompt's instructions followed.

Faster than the reference at identical verdicts: each distinct variant is made once per response and checked once
per instruction (the strict verdict is the first loose try), and sentence/word/language analyses are cached per
text in `rewards.ifeval.text`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from rewards.base import MAX_RESPONSE_CHARS
from rewards.ifeval.instructions import Check, build_checker
from rewards.jsonl import read_jsonl


@dataclass(frozen=True)
class InstructionResults:
    """Per-instruction verdicts for one response, strict and loose."""

    instruction_ids: list[str]
    strict: list[bool]
    loose: list[bool]

    @property
    def prompt_strict(self) -> bool:
        return all(self.strict)

    @property
    def prompt_loose(self) -> bool:
        return all(self.loose)


def loose_variants(response: str) -> list[str]:
    """The reference's eight loose variants, in its order, without blanks and duplicates (the first is the response
    itself, so a strict pass is a loose pass)."""
    lines = response.split("\n")
    without_first = "\n".join(lines[1:]).strip()
    without_last = "\n".join(lines[:-1]).strip()
    without_both = "\n".join(lines[1:-1]).strip()
    candidates = (
        response,
        response.replace("*", ""),
        without_first,
        without_last,
        without_both,
        without_first.replace("*", ""),
        without_last.replace("*", ""),
        without_both.replace("*", ""),
    )
    seen: set[str] = set()
    out = []
    for text in candidates:
        if text.strip() and text not in seen:
            seen.add(text)
            out.append(text)
    return out


@lru_cache(maxsize=4096)
def _cached_checker(instruction_id: str, kwargs_json: str, lang_failure_passes: bool) -> Check:
    return build_checker(instruction_id, json.loads(kwargs_json), lang_failure_passes=lang_failure_passes)


def get_checker(instruction_id: str, kwargs: dict[str, Any] | None, *, lang_failure_passes: bool = True) -> Check:
    """`build_checker`, memoised on the (instruction id, kwargs) pair: RL data repeats the same constraints."""
    kwargs = {k: v for k, v in (kwargs or {}).items() if v is not None}
    try:
        key = json.dumps(kwargs, sort_keys=True)
    except TypeError as err:
        raise ValueError(f"IFEval kwargs for {instruction_id!r} are not JSON data: {kwargs!r}") from err
    return _cached_checker(instruction_id, key, lang_failure_passes)


def check_instructions(
    response: str,
    instruction_id_list: Sequence[str],
    kwargs_list: Sequence[dict[str, Any] | None] | None = None,
    *,
    prompt: str | None = None,
    loose: bool = True,
    lang_failure_passes: bool = True,
    max_chars: int | None = MAX_RESPONSE_CHARS,
) -> InstructionResults:
    """Google-format verdicts for `response`. `kwargs_list[i]` belongs to `instruction_id_list[i]` (None values
    ignored). `prompt` is accepted for interface symmetry: no Google checker reads it (`repeat_prompt` carries
    `prompt_to_repeat` in its kwargs). `loose=False` skips the loose variants (then `.loose` repeats `.strict`).
    `max_chars` truncates the response first (bounded time); None disables that."""
    del prompt
    ids = list(instruction_id_list)
    kwargs_seq = list(kwargs_list) if kwargs_list is not None else [None] * len(ids)
    if len(kwargs_seq) != len(ids):
        raise ValueError(f"{len(ids)} instruction ids but {len(kwargs_seq)} kwargs entries")
    if max_chars is not None and len(response) > max_chars:
        response = response[:max_chars]
    checkers = [get_checker(i, kw, lang_failure_passes=lang_failure_passes) for i, kw in zip(ids, kwargs_seq)]
    if not response.strip():
        return InstructionResults(ids, [False] * len(ids), [False] * len(ids))
    strict = [bool(check(response)) for check in checkers]
    if not loose or all(strict):
        return InstructionResults(ids, strict, list(strict))
    variants = loose_variants(response)[1:]  # [0] is the response: already checked
    loose_verdicts = [ok or any(check(v) for v in variants) for ok, check in zip(strict, checkers)]
    return InstructionResults(ids, strict, loose_verdicts)


def accuracies(results: Iterable[InstructionResults]) -> dict[str, float]:
    """The four standard IFEval numbers: prompt-level and instruction-level accuracy, strict and loose."""
    results = list(results)
    if not results:
        raise ValueError("no results to aggregate")
    n_inst = sum(len(r.strict) for r in results)
    return {
        "prompt_level_strict": sum(r.prompt_strict for r in results) / len(results),
        "prompt_level_loose": sum(r.prompt_loose for r in results) / len(results),
        "inst_level_strict": sum(sum(r.strict) for r in results) / max(n_inst, 1),
        "inst_level_loose": sum(sum(r.loose) for r in results) / max(n_inst, 1),
    }


class PromptIndex:
    """IFEval prompt rows (`key`, `prompt`, `instruction_id_list`, `kwargs`) by key and by exact prompt text."""

    def __init__(self, path: str | Path):
        self.path = path
        self.rows: list[dict] = []  # in file order
        self.by_key: dict[Any, dict] = {}
        self.by_prompt: dict[str, dict] = {}
        for lineno, row in read_jsonl(path):
            missing = [f for f in ("prompt", "instruction_id_list", "kwargs") if f not in row]
            if missing:
                raise ValueError(f"{path}:{lineno}: missing field(s) {missing}")
            self.rows.append(row)
            if "key" in row:
                self.by_key[row["key"]] = row
            self.by_prompt[row["prompt"]] = row

    def find(self, row: dict) -> tuple[dict | None, str]:
        """The prompt row a response row joins to (on `key` when it has one, else the prompt text), and how."""
        if "key" in row:
            return self.by_key.get(row["key"]), f"key {row['key']!r}"
        if isinstance(row.get("prompt"), str):
            return self.by_prompt.get(row["prompt"]), f"prompt {row['prompt'][:60]!r}"
        return None, "no 'key' or 'prompt' field"


def evaluate_file(
    responses_path: str | Path,
    prompts_path: str | Path,
    *,
    lang_failure_passes: bool = True,
    max_chars: int | None = MAX_RESPONSE_CHARS,
) -> tuple[list[InstructionResults], dict[str, float]]:
    """Score a jsonl of `{"key" | "prompt": ..., "response": ...}` rows against an IFEval prompts file
    (`key`, `prompt`, `instruction_id_list`, `kwargs` per row). Rows join on `key` when they carry one, else on the
    exact prompt text. Returns per-response results (in the responses file's order) and the four accuracies."""
    index = PromptIndex(prompts_path)
    results = []
    for lineno, row in read_jsonl(responses_path):
        if not isinstance(row.get("response"), str):
            raise ValueError(f"{responses_path}:{lineno}: needs a string 'response'")
        if "key" not in row and "prompt" not in row:
            raise ValueError(f"{responses_path}:{lineno}: needs 'key' or 'prompt' to join with {prompts_path}")
        target, how = index.find(row)
        if target is None:
            raise ValueError(f"{responses_path}:{lineno}: {how} not found in {prompts_path}")
        results.append(
            check_instructions(
                row["response"],
                target["instruction_id_list"],
                target["kwargs"],
                prompt=target["prompt"],
                lang_failure_passes=lang_failure_passes,
                max_chars=max_chars,
            )
        )
    return results, accuracies(results)
