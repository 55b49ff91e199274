"""N-gram contamination report: how many evaluation items share an n-gram with the training prompts.

Text is normalised before n-grams are taken: lowercased, every character that is not a letter, digit or
whitespace dropped, split on whitespace. An item is "contaminated" when any of its word n-grams (default 8) also
occurs in any training prompt; items shorter than n words cannot match and are counted as `too_short`.

Training sources: jsonl / json / jsonl.gz / parquet files, or `procedural:TASK?n=N&seed=S`. The prompt of a row is
the text of its non-assistant chat turns (`messages`), else the first of `prompt`, `question`, `instruction` (+
`input`), `query`, `text`. Evaluation sources: an eval task name (gsm8k, ifeval, arc_easy, arc_challenge,
hellaswag: the question / prompt / context that rlvr eval uses) or a file read like a training file.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from core.procedural import is_procedural_spec, load_procedural
from rewards.jsonl import JsonlError, scan_jsonl
from rlvr.eval.data import TASK_NAMES, load_task_docs

PROMPT_KEYS = ("prompt", "question", "instruction", "query", "ctx", "text")
_NON_WORD = re.compile(r"[^\w\s]|_")


class ContaminationInputError(ValueError):
    pass


def normalize_words(text: str) -> list[str]:
    return _NON_WORD.sub("", text.lower()).split()


def ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    words = normalize_words(text)
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def row_prompt(row: dict, where: str = "") -> str:
    """The prompt text of a data row (training or evaluation)."""
    messages = row.get("messages")
    if isinstance(messages, list) and messages:
        parts = [m.get("content", "") for m in messages if isinstance(m, dict) and m.get("role") != "assistant"]
        return "\n".join(p for p in parts if isinstance(p, str))
    for key in PROMPT_KEYS:
        value = row.get(key)
        if isinstance(value, str):
            extra = row.get("input") if key == "instruction" else None
            return value + ("\n" + extra if isinstance(extra, str) and extra else "")
    raise ContaminationInputError(f"{where}: no prompt found (looked for messages, {', '.join(PROMPT_KEYS)})")


def read_rows(path: Path) -> list[tuple[str, dict]]:
    """(where, row) pairs from a jsonl / jsonl.gz / json / parquet file."""
    name = path.name.lower()
    if not path.is_file():
        raise ContaminationInputError(f"file not found: {path}")
    if name.endswith(".parquet"):
        import pandas as pd  # lazy: seconds to import, and only parquet files need it

        return [(f"{path} row {i}", r) for i, r in enumerate(pd.read_parquet(path).to_dict("records"))]
    if name.endswith(".json"):
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, list):
            raise ContaminationInputError(f"{path}: expected a JSON list of rows")
        return [(f"{path} item {i}", r) for i, r in enumerate(data)]
    try:  # jsonl or jsonl.gz: rewards.jsonl, strict (row_prompt reports a row that is not an object)
        rows, _ = scan_jsonl(path, strict=True, objects_only=False)
    except JsonlError as err:
        raise ContaminationInputError(str(err)) from None
    return [(f"{path}:{lineno}", row) for lineno, row in rows]


def load_train_prompts(source: str) -> list[str]:
    if is_procedural_spec(source):
        return [row_prompt(r) for r in load_procedural(source)]
    return [row_prompt(r, where) for where, r in read_rows(Path(source))]


def eval_doc_text(task: str, doc: dict) -> str:
    if task == "gsm8k":
        return doc["question"]
    if task == "ifeval":
        return doc["prompt"]
    if task in ("arc_easy", "arc_challenge"):
        return doc["question"]
    return doc["query"]  # hellaswag


def load_eval_items(source: str, data_dir: str | Path | None = None) -> tuple[str, list[tuple[str, str]]]:
    """(dataset name, [(item id, text)]) for an eval task name or a file."""
    if source in TASK_NAMES:
        docs = load_task_docs(source, data_dir=data_dir)
        return source, [(d["id"], eval_doc_text(source, d)) for d in docs]
    path = Path(source)
    items = []
    for where, row in read_rows(path):
        items.append((str(row.get("id", row.get("key", where))), row_prompt(row, where)))
    return path.name, items


@dataclass
class DatasetReport:
    dataset: str
    n_items: int
    n_contaminated: int
    too_short: int
    examples: list[dict] = field(default_factory=list)

    @property
    def fraction(self) -> float:
        return self.n_contaminated / self.n_items if self.n_items else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "fraction": self.fraction}


def contamination_report(train_prompts: Iterable[str], eval_sets: dict[str, list[tuple[str, str]]], *,
                         n: int = 8, max_examples: int = 5) -> list[DatasetReport]:
    """Per eval set: items sharing any word n-gram with any training prompt, with up to `max_examples` examples
    (item id, a shared n-gram, the number of shared n-grams and the start of the item)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    train_grams: set[tuple[str, ...]] = set()
    for prompt in train_prompts:
        train_grams |= ngrams(prompt, n)
    reports = []
    for name, items in eval_sets.items():
        rep = DatasetReport(dataset=name, n_items=len(items), n_contaminated=0, too_short=0)
        for item_id, text in items:
            grams = ngrams(text, n)
            if not grams:
                rep.too_short += 1
                continue
            shared = grams & train_grams
            if shared:
                rep.n_contaminated += 1
                if len(rep.examples) < max_examples:
                    rep.examples.append({"id": item_id, "shared_ngram": " ".join(min(shared)),
                                         "n_shared": len(shared), "text": text[:200]})
        reports.append(rep)
    return reports


def format_table(reports: list[DatasetReport], n: int) -> str:
    lines = [f"{'eval dataset':24s} {'items':>7s} {f'{n}-gram hits':>12s} {'fraction':>9s} {'too short':>9s}"]
    for r in reports:
        lines.append(f"{r.dataset:24s} {r.n_items:7d} {r.n_contaminated:12d} {r.fraction:9.2%} {r.too_short:9d}")
    return "\n".join(lines)
