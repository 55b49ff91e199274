"""Evaluation data, from local files (the formats in ../shared/data) or the Hugging Face hub, as plain dicts.

Every task's loader returns a list of "docs" in one normalised shape per task family:
- gsm8k:     {"id", "question", "answer" (final number as text), "solution" (worked solution, "#### N" removed),
              "raw_answer" (the answer field as given)}; the eval task gsm8k_lm_eval reads these too
- ifeval:    {"id", "prompt", "instruction_id_list", "kwargs"}  (kwargs without None values)
- arc_*:     {"id", "question", "choices", "gold"}              (question without the "Question: " prefix)
- hellaswag: {"id", "query", "choices", "gold"}                 (lm-eval's preprocessing applied)

Local layout (a data dir such as ../shared/data): gsm8k/{test,train}.jsonl, ifeval/input_data.jsonl,
arc/arc_{easy,challenge}_test.jsonl (llm-foundry format), hellaswag/hellaswag_val_subset1000.jsonl (original
format; any hellaswag/*.jsonl is accepted). Hub names: openai/gsm8k (main), google/IFEval, allenai/ai2_arc
(ARC-Easy, ARC-Challenge), Rowan/hellaswag.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from core.logging import get_logger
from rewards.jsonl import read_jsonl as strict_read_jsonl

log = get_logger(__name__)

TASK_NAMES = ("gsm8k", "ifeval", "arc_easy", "arc_challenge", "hellaswag")  # the data sets
EVAL_TASKS = ("gsm8k", "gsm8k_lm_eval", "ifeval", "arc_easy", "arc_challenge", "hellaswag")  # --tasks
DATA_OF = {"gsm8k_lm_eval": "gsm8k"}  # eval task -> the data set it reads, where the names differ
REPO_ROOT = Path(__file__).resolve().parents[2]


class EvalDataError(ValueError):
    """Evaluation data is missing or malformed; the message names the file (and line)."""


def default_data_dir() -> Path | None:
    """../shared/data next to the repository, if it exists."""
    candidate = REPO_ROOT.parent / "shared" / "data"
    return candidate if candidate.is_dir() else None


def read_jsonl(path: Path) -> list[dict]:
    try:
        pairs = strict_read_jsonl(path)
    except ValueError as err:
        raise EvalDataError(str(err)) from None
    for lineno, row in pairs:
        row["_where"] = f"{path}:{lineno}"
    return [row for _, row in pairs]


def _field(row: dict, key: str) -> Any:
    if key not in row:
        raise EvalDataError(f"{row.get('_where', '<hub row>')}: missing field {key!r}")
    return row[key]


# ---- GSM8K ----

_CALC = re.compile(r"<<[^>]*>>")


def split_gsm8k_answer(answer: str, where: str = "") -> tuple[str, str]:
    """'... #### 18' -> (worked solution without calculator annotations, '18')."""
    if "####" not in answer:
        raise EvalDataError(f"{where}: GSM8K answer has no '####' final answer marker")
    solution, final = answer.rsplit("####", 1)
    return _CALC.sub("", solution).strip(), final.strip().replace(",", "")


def _gsm8k_docs(rows: list[dict], prefix: str) -> list[dict]:
    docs = []
    for i, row in enumerate(rows):
        solution, final = split_gsm8k_answer(_field(row, "answer"), row.get("_where", f"row {i}"))
        docs.append({"id": f"{prefix}-{i}", "question": _field(row, "question"), "answer": final,
                     "solution": solution, "raw_answer": row["answer"]})
    return docs


# ---- IFEval ----

def _ifeval_docs(rows: list[dict]) -> list[dict]:
    docs = []
    for row in rows:
        ids = _field(row, "instruction_id_list")
        kwargs = [{k: v for k, v in (kw or {}).items() if v is not None} for kw in _field(row, "kwargs")]
        if len(ids) != len(kwargs):
            raise EvalDataError(f"{row.get('_where', '<hub row>')}: {len(ids)} instruction ids but {len(kwargs)} kwargs")
        docs.append({"id": str(row.get("key", len(docs))), "prompt": _field(row, "prompt"),
                     "instruction_id_list": list(ids), "kwargs": kwargs})
    return docs


# ---- ARC ----

def _arc_local_docs(rows: list[dict], prefix: str) -> list[dict]:
    docs = []
    for i, row in enumerate(rows):
        query = _field(row, "query")
        question = query[len("Question:"):].strip() if query.startswith("Question:") else query.strip()
        choices, gold = _field(row, "choices"), int(_field(row, "gold"))
        if not 0 <= gold < len(choices):
            raise EvalDataError(f"{row['_where']}: gold index {gold} outside the {len(choices)} choices")
        docs.append({"id": f"{prefix}-{i}", "question": question, "choices": list(choices), "gold": gold})
    return docs


def _arc_hub_docs(rows) -> list[dict]:
    docs = []
    for row in rows:
        labels = list(row["choices"]["label"])
        if row["answerKey"] not in labels:
            raise EvalDataError(f"ARC hub row {row['id']}: answerKey {row['answerKey']!r} not in labels {labels}")
        docs.append({"id": row["id"], "question": row["question"], "choices": list(row["choices"]["text"]),
                     "gold": labels.index(row["answerKey"])})
    return docs


# ---- HellaSwag (lm-eval's preprocessing: WikiHow bracket artefacts removed, ctx_b capitalised) ----

def hellaswag_preprocess(text: str) -> str:
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


def _hellaswag_docs(rows) -> list[dict]:
    docs = []
    for i, row in enumerate(rows):
        ctx = row["ctx_a"] + " " + row["ctx_b"].capitalize()
        label = row["label"]
        if label in ("", None):
            raise EvalDataError(f"{row.get('_where', f'hub row {i}')}: HellaSwag row has no label (test split?)")
        docs.append({"id": str(row.get("ind", i)),
                     "query": hellaswag_preprocess(row["activity_label"] + ": " + ctx),
                     "choices": [hellaswag_preprocess(e) for e in row["endings"]], "gold": int(label)})
    return docs


# ---- dispatch ----

def _local_file(data_dir: Path, task: str, split: str) -> Path:
    if task == "gsm8k":
        path = data_dir / "gsm8k" / f"{split}.jsonl"
    elif task == "ifeval":
        path = data_dir / "ifeval" / "input_data.jsonl"
    elif task in ("arc_easy", "arc_challenge"):
        path = data_dir / "arc" / f"{task}_test.jsonl"
    elif task == "hellaswag":
        found = sorted((data_dir / "hellaswag").glob("*.jsonl"))
        if not found:
            raise EvalDataError(f"no hellaswag/*.jsonl under {data_dir}")
        path = found[0]
    else:
        raise EvalDataError(f"unknown eval task {task!r}; known: {', '.join(TASK_NAMES)}")
    if not path.is_file():
        raise EvalDataError(f"eval data for {task!r} not found: {path}")
    return path


def _docs_from_rows(task: str, rows, *, hub: bool, prefix: str) -> list[dict]:
    if task == "gsm8k":
        return _gsm8k_docs(list(rows), prefix)
    if task == "ifeval":
        return _ifeval_docs(list(rows))
    if task in ("arc_easy", "arc_challenge"):
        return _arc_hub_docs(rows) if hub else _arc_local_docs(list(rows), prefix)
    if task == "hellaswag":
        return _hellaswag_docs(rows)
    raise EvalDataError(f"unknown eval task {task!r}; known: {', '.join(TASK_NAMES)}")


HUB = {
    "gsm8k": ("openai/gsm8k", "main", {"test": "test", "train": "train"}),
    "ifeval": ("google/IFEval", None, {"test": "train"}),
    "arc_easy": ("allenai/ai2_arc", "ARC-Easy", {"test": "test"}),
    "arc_challenge": ("allenai/ai2_arc", "ARC-Challenge", {"test": "test"}),
    "hellaswag": ("Rowan/hellaswag", None, {"test": "validation"}),
}


def load_task_docs(task: str, *, data_dir: str | Path | None = None, split: str = "test",
                   source: str = "auto") -> list[dict]:
    """Docs of `task` ("test" = the evaluation split; "train" only for GSM8K few-shot examples).

    source: "local" (files under `data_dir`, default ../shared/data), "hub" (datasets.load_dataset), or "auto"
    (local when a data dir exists, else hub).
    """
    if task not in TASK_NAMES:
        raise EvalDataError(f"unknown eval task {task!r}; known: {', '.join(TASK_NAMES)}")
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    if source == "auto":
        source = "local" if root is not None else "hub"
    if source == "local":
        if root is None:
            raise EvalDataError("no local data dir: pass --data-dir DIR (or use --source hub)")
        path = _local_file(root, task, split)
        return _docs_from_rows(task, read_jsonl(path), hub=False, prefix=f"{task}-{split}")
    if source == "hub":
        name, config, splits = HUB[task]
        if split not in splits:
            raise EvalDataError(f"task {task!r} has no {split!r} split on the hub")
        import datasets  # lazy: seconds to import, and only hub data needs it

        log.info("loading %s (%s) split %s from the hub", name, config, splits[split])
        rows = datasets.load_dataset(name, config, split=splits[split])
        return _docs_from_rows(task, rows, hub=True, prefix=f"{task}-{split}")
    raise EvalDataError(f"unknown data source {source!r}; use auto, local or hub")
