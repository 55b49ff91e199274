"""RLVR prompts in the Tulu 3 RLVR schema, validated at load time, and a deterministic, resumable sampler.

Row schema (allenai/RLVR-GSM-MATH-IF-Mixed-Constraints):
    {"messages": [{"role": "user", "content": ...}, ...], "ground_truth": ..., "dataset": "gsm8k" | [...],
     "id": optional}
`dataset` names the verifier (rewards registry, case-insensitive; "MATH" -> "math"); a list of names goes with a
list of ground truths of the same length. Other columns are kept in `PromptRow.extra`.

Source strings accepted by `load_prompts` (the config's list of prompt sources):
- a local file: `path/to/rows.jsonl`, `.json` (a list of rows, or an object with a "rows"/"data" list) or
  `.parquet`. Rows are identified by source and 1-based line (jsonl) or row number (json, parquet, hub).
- a hub dataset: `[hf:]OWNER/NAME[/CONFIG][:SPLIT]` loaded with `datasets.load_dataset(NAME, CONFIG, split=SPLIT)`;
  SPLIT defaults to "train" and may use datasets' slicing, e.g. `allenai/RLVR-GSM-MATH-IF-Mixed-Constraints:train`
  or `openai/gsm8k/main:test[:200]`. A local path that exists always wins over a hub name.
- `procedural:TASK?n=N&seed=S`: rows from `core.procedural` (no download).
- `gsm8k:SOURCE`: raw GSM8K rows (`question`, `answer` ending in `#### N`) from any file or hub SOURCE above,
  converted to the schema: one user turn (the question and an instruction to end with "The answer is N."),
  `ground_truth` = N without thousands separators, `dataset` = "gsm8k". A file or hub source whose first row has
  `question` and `answer` but no `messages` is converted the same way without the prefix.

Malformed rows are found here, never mid-training (RELIABILITY.md #8): each is counted under a reason with its id
and `source:line` in a `DropReport`. Reasons: bad_json, not_an_object, empty_messages, bad_messages,
missing_ground_truth, missing_dataset, bad_gsm8k_answer, too_long (needs a tokenizer and max_prompt_tokens),
unknown_verifier. An unknown verifier name fails the load at once (a config error, not bad data); otherwise the
load fails when the dropped fraction exceeds `max_dropped_fraction`, naming reasons and file:line examples.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.logging import get_logger

log = get_logger(__name__)

__all__ = ["PromptDataError", "PromptRow", "DroppedRow", "DropReport", "PromptSet", "PromptSampler",
           "load_prompts", "gsm8k_to_row", "GSM8K_INSTRUCTION"]

FILE_SUFFIXES = (".jsonl", ".json", ".parquet")
ROLES = ("system", "user", "assistant")
GSM8K_PREFIX = "gsm8k:"
HF_PREFIX = "hf:"
# Same instruction as the procedural GSM8K task, so both kinds of rows ask for the same answer form.
GSM8K_INSTRUCTION = 'Solve the problem step by step, then end your reply with "The answer is <number>."'
EXAMPLES_PER_REASON = 3


class PromptDataError(ValueError):
    """Prompt data cannot be used: the message names the source, file:line examples and the reason."""


@dataclass(frozen=True)
class PromptRow:
    """One validated prompt. `where` is `source:line` (line = 1-based jsonl line, or row number elsewhere)."""

    id: str
    messages: list[dict[str, str]]
    ground_truth: Any
    dataset: str | list[str]
    source: str
    line: int
    prompt_tokens: int | None = None  # chat-template tokens incl. the generation prompt, when a tokenizer was given
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"{self.source}:{self.line}"

    @property
    def verifier_names(self) -> list[str]:
        return [self.dataset] if isinstance(self.dataset, str) else list(self.dataset)

    def to_dict(self) -> dict[str, Any]:
        """The row in the Tulu schema (+ id), as the generator/reward side sees it."""
        return {"id": self.id, "messages": self.messages, "ground_truth": self.ground_truth,
                "dataset": self.dataset, **self.extra}


@dataclass(frozen=True)
class DroppedRow:
    id: str
    where: str
    detail: str


@dataclass
class DropReport:
    """Rows left out at load time, grouped by reason."""

    total_rows: int = 0
    dropped: dict[str, list[DroppedRow]] = field(default_factory=dict)

    def add(self, reason: str, row_id: str, where: str, detail: str) -> None:
        self.dropped.setdefault(reason, []).append(DroppedRow(row_id, where, detail))

    @property
    def counts(self) -> dict[str, int]:
        return {reason: len(rows) for reason, rows in sorted(self.dropped.items())}

    @property
    def num_dropped(self) -> int:
        return sum(len(rows) for rows in self.dropped.values())

    @property
    def fraction(self) -> float:
        return self.num_dropped / self.total_rows if self.total_rows else 0.0

    def ids(self, reason: str) -> list[str]:
        return [d.id for d in self.dropped.get(reason, [])]

    def summary(self, examples: int = EXAMPLES_PER_REASON) -> str:
        if not self.dropped:
            return f"all {self.total_rows} rows valid"
        lines = [f"dropped {self.num_dropped} of {self.total_rows} rows ({self.fraction:.1%}):"]
        for reason, rows in sorted(self.dropped.items()):
            shown = "; ".join(f"{d.where} ({d.detail})" for d in rows[:examples])
            more = f"; ... {len(rows) - examples} more" if len(rows) > examples else ""
            lines.append(f"  {reason}: {len(rows)} — {shown}{more}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """For logs/metrics: counts per reason and the ids of the dropped rows."""
        return {"total_rows": self.total_rows, "dropped": self.num_dropped, "counts": self.counts,
                "ids": {reason: self.ids(reason) for reason in sorted(self.dropped)}}


@dataclass
class PromptSet:
    rows: list[PromptRow]
    report: DropReport
    sources: list[str]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> PromptRow:
        return self.rows[i]

    def __iter__(self) -> Iterator[PromptRow]:
        return iter(self.rows)

    def ids(self) -> list[str]:
        return [r.id for r in self.rows]

    def fingerprint(self) -> str:
        """Hash of the row ids in order: a resumed run checks that it samples from the same prompt set."""
        return hashlib.sha256("\n".join(self.ids()).encode()).hexdigest()[:16]

    def verifier_counts(self) -> dict[str, int]:
        return dict(sorted(Counter(n for r in self.rows for n in r.verifier_names).items()))


# ---------------------------------------------------------------------------------------------------------------
# Reading sources into raw (where, line, row-or-error) records.

@dataclass
class _Raw:
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


def _read_jsonl(path: Path, label: str) -> list[_Raw]:
    out = []
    with open(path, encoding="utf-8") as f:
        for lineno, text in enumerate(f, 1):
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as err:
                out.append(_Raw(label, lineno, None, ("bad_json", f"not valid JSON: {err.msg} at column {err.colno}")))
                continue
            out.append(_Raw(label, lineno, row))
    return out


def _read_json(path: Path, label: str) -> list[_Raw]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise PromptDataError(f"{path}:{err.lineno}: not valid JSON ({err.msg}); a .json source must hold a list "
                              "of rows (use .jsonl for one row per line)") from None
    if isinstance(data, dict):
        data = data.get("rows", data.get("data"))
    if not isinstance(data, list):
        raise PromptDataError(f"{path}: a .json source must hold a list of rows (or an object with a 'rows' list)")
    return [_Raw(label, i, row) for i, row in enumerate(data, 1)]


def _read_parquet(path: Path, label: str) -> list[_Raw]:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    return [_Raw(label, i, row) for i, row in enumerate(table.to_pylist(), 1)]


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


def _read_hub(spec: str) -> list[_Raw]:
    import datasets

    name, config, split = parse_hub_spec(spec)
    log.info("loading hub dataset %s (config %s, split %s)", name, config, split)
    ds = datasets.load_dataset(name, config, split=split)
    return [_Raw(spec, i, dict(row)) for i, row in enumerate(ds, 1)]


def _read_source(spec: str) -> list[_Raw]:
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


def _looks_like_gsm8k(raws: list[_Raw]) -> bool:
    first = next((r.row for r in raws if isinstance(r.row, dict)), None)
    return first is not None and "messages" not in first and "question" in first and "answer" in first


# ---------------------------------------------------------------------------------------------------------------
# Validation.

def _messages_problem(messages: Any) -> tuple[str, str] | None:
    if messages is None or (isinstance(messages, list) and not messages):
        return "empty_messages", "no messages"
    if not isinstance(messages, list):
        return "bad_messages", f"messages is a {type(messages).__name__}, not a list"
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            return "bad_messages", f"message {i} is not {{'role': str, 'content': str}}"
        if m["role"] not in ROLES:
            return "bad_messages", f"message {i} has role {m['role']!r}; expected one of {', '.join(ROLES)}"
    if messages[-1]["role"] == "assistant":
        return "bad_messages", "the last message is the assistant's; the prompt must end with a user turn"
    if not any(m["content"].strip() for m in messages if m["role"] == "user"):
        return "empty_messages", "no user message with text"
    return None


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip()) or (
        isinstance(value, (list, dict)) and not value)


def _dataset_problem(row: dict) -> tuple[str, str] | None:
    dataset = row.get("dataset")
    if _is_missing(dataset):
        return "missing_dataset", "no 'dataset' (verifier name)"
    names = [dataset] if isinstance(dataset, str) else dataset
    if not isinstance(names, list) or not all(isinstance(n, str) and n.strip() for n in names):
        return "missing_dataset", f"'dataset' must be a name or a list of names, got {dataset!r}"
    if isinstance(dataset, list):
        gt = row.get("ground_truth")
        if not isinstance(gt, list) or len(gt) != len(dataset):
            return "missing_ground_truth", (f"'dataset' lists {len(dataset)} verifiers, so 'ground_truth' must be a "
                                            "list of the same length")
        if any(_is_missing(g) for g in gt):
            return "missing_ground_truth", "an entry of the 'ground_truth' list is empty"
    return None


def _verifier_checker(known: Collection[str] | Callable[[str], Any] | None) -> Callable[[str], bool]:
    """True when a verifier name resolves. Default: the rewards registry (names, aliases, module:function)."""
    if known is None:
        from rewards.registry import UnknownVerifierError, get_verifier

        def check(name: str) -> bool:
            try:
                get_verifier(name)
            except UnknownVerifierError:
                return False
            return True

        return check
    if callable(known):  # a predicate, or a lookup such as rewards.registry.get_verifier that raises when unknown
        def check_callable(name: str) -> bool:
            try:
                return bool(known(name))
            except (KeyError, ValueError):
                return False

        return check_callable
    lowered = {k.lower() for k in known}
    return lambda name: name.lower() in lowered


def _count_prompt_tokens(tokenizer, rows: list[dict]) -> list[int]:
    texts = [tokenizer.apply_chat_template(r["messages"], tokenize=False, add_generation_prompt=True) for r in rows]
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return [len(x) for x in ids]


_KNOWN_KEYS = {"id", "messages", "ground_truth", "dataset"}


def without_held_out(train: PromptSet, held_out: Sequence[PromptRow]) -> tuple[PromptSet, int]:
    """`train` minus every row whose conversation is identical to a held-out row's (procedural generators with
    different seeds can draw the same small question twice). Returns the filtered set and how many were dropped,
    so held-out accuracy is measured on prompts the policy was never trained on."""
    def key(row: PromptRow) -> str:
        return json.dumps(row.messages, sort_keys=True)

    held = {key(r) for r in held_out}
    keep = [r for r in train.rows if key(r) not in held]
    return PromptSet(keep, train.report, train.sources), len(train.rows) - len(keep)


def load_prompts(sources: Sequence[str] | str, *, tokenizer=None, max_prompt_tokens: int | None = None,
                 max_dropped_fraction: float = 0.0,
                 known_verifiers: Collection[str] | Callable[[str], Any] | None = None) -> PromptSet:
    """Load, convert and validate prompt rows from `sources` (see the module docstring for the forms).

    - `tokenizer` + `max_prompt_tokens`: rows whose chat-template prompt (with the generation prompt) is longer
      are dropped as too_long.
    - `max_dropped_fraction`: the load fails when more than this fraction of all rows is dropped (0.0: any).
    - `known_verifiers`: names (or a predicate) accepted in `dataset`; default the rewards registry. An unknown
      name raises `PromptDataError` listing each unknown name with rows that use it.
    """
    if isinstance(sources, str):
        sources = [sources]
    if not sources:
        raise PromptDataError("no prompt sources given")
    if max_prompt_tokens is not None and tokenizer is None:
        raise PromptDataError("max_prompt_tokens is set but no tokenizer was given to count prompt tokens")
    if not 0.0 <= max_dropped_fraction <= 1.0:
        raise PromptDataError(f"max_dropped_fraction must lie in [0, 1], got {max_dropped_fraction}")

    report = DropReport()
    candidates: list[tuple[_Raw, dict, str]] = []  # (raw, schema row, id) of rows that passed the structural checks
    seen_ids: Counter[str] = Counter()

    for spec in sources:
        raws, converter = _load_source(spec)
        report.total_rows += len(raws)
        for raw in raws:
            row_id = raw.default_id
            if isinstance(raw.row, dict) and raw.row.get("id") not in (None, ""):
                row_id = str(raw.row["id"])
            where = f"{raw.source}:{raw.line}"
            if raw.error is not None:
                report.add(raw.error[0], row_id, where, raw.error[1])
                continue
            if not isinstance(raw.row, dict):
                report.add("not_an_object", row_id, where, f"row is a {type(raw.row).__name__}, not an object")
                continue
            row = raw.row
            if converter is not None:
                try:
                    row = converter(row)
                except ValueError as err:
                    report.add("bad_gsm8k_answer", row_id, where, str(err))
                    continue
            problem = (_messages_problem(row.get("messages"))
                       or (("missing_ground_truth", "no 'ground_truth'") if _is_missing(row.get("ground_truth"))
                           else None)
                       or _dataset_problem(row))
            if problem is not None:
                report.add(problem[0], row_id, where, problem[1])
                continue
            seen_ids[row_id] += 1
            if seen_ids[row_id] > 1:  # keep ids unique and stable: the n-th repeat gets a "#n" suffix
                row_id = f"{row_id}#{seen_ids[row_id]}"
            candidates.append((raw, row, row_id))

    _check_verifiers(candidates, report, known_verifiers)

    token_counts: list[int | None] = [None] * len(candidates)
    if tokenizer is not None:
        token_counts = list(_count_prompt_tokens(tokenizer, [c[1] for c in candidates]))

    rows: list[PromptRow] = []
    for (raw, row, row_id), n_tokens in zip(candidates, token_counts):
        if max_prompt_tokens is not None and n_tokens is not None and n_tokens > max_prompt_tokens:
            report.add("too_long", row_id, f"{raw.source}:{raw.line}",
                       f"{n_tokens} prompt tokens > max_prompt_tokens {max_prompt_tokens}")
            continue
        rows.append(PromptRow(
            id=row_id, messages=[{"role": m["role"], "content": m["content"]} for m in row["messages"]],
            ground_truth=row["ground_truth"], dataset=row["dataset"], source=raw.source, line=raw.line,
            prompt_tokens=n_tokens, extra={k: v for k, v in row.items() if k not in _KNOWN_KEYS}))

    if report.dropped:
        log.warning("prompt data: %s", report.summary())
    if report.fraction > max_dropped_fraction:
        raise PromptDataError(f"too many malformed prompt rows in {', '.join(sources)}: {report.fraction:.1%} "
                              f"dropped > max_dropped_fraction {max_dropped_fraction:.1%}\n{report.summary()}")
    if not rows:
        raise PromptDataError(f"no usable prompt rows in {', '.join(sources)}\n{report.summary()}")
    log.info("loaded %d prompts from %d source(s); verifiers %s", len(rows), len(sources),
             dict(Counter(n for r in rows for n in r.verifier_names)))
    return PromptSet(rows=rows, report=report, sources=list(sources))


def _load_source(spec: str) -> tuple[list[_Raw], Callable[[dict], dict] | None]:
    from core import procedural

    if procedural.is_procedural_spec(spec):
        try:
            rows = procedural.load_procedural(spec)
        except ValueError as err:
            raise PromptDataError(f"prompt source {spec!r}: {err}") from None
        return [_Raw(spec, i, row) for i, row in enumerate(rows, 1)], None
    if spec.startswith(GSM8K_PREFIX):
        inner = spec[len(GSM8K_PREFIX):]
        if not inner:
            raise PromptDataError(f"prompt source {spec!r}: expected gsm8k:FILE_OR_HUB_NAME")
        return _read_source(inner), gsm8k_to_row
    raws = _read_source(spec)
    return raws, (gsm8k_to_row if _looks_like_gsm8k(raws) else None)


def _check_verifiers(candidates: list[tuple[_Raw, dict, str]], report: DropReport,
                     known: Collection[str] | Callable[[str], Any] | None) -> None:
    """Every verifier name must resolve; unknown names are counted, then fail the load (a config error)."""
    is_known = _verifier_checker(known)
    verdict: dict[str, bool] = {}
    unknown_rows: dict[str, list[str]] = {}
    for raw, row, row_id in candidates:
        names = [row["dataset"]] if isinstance(row["dataset"], str) else row["dataset"]
        for name in names:
            if name not in verdict:
                verdict[name] = is_known(name)
            if not verdict[name]:
                report.add("unknown_verifier", row_id, f"{raw.source}:{raw.line}", f"dataset {name!r}")
                unknown_rows.setdefault(name, []).append(f"{raw.source}:{raw.line}")
    if unknown_rows:
        parts = [f"{name!r} ({len(w)} rows, e.g. {', '.join(w[:EXAMPLES_PER_REASON])})"
                 for name, w in sorted(unknown_rows.items())]
        raise PromptDataError("unknown verifier name in the prompts' 'dataset' column: " + "; ".join(parts)
                              + ". Register a verifier under that name, give 'package.module:function', "
                              "or fix the data.")


# ---------------------------------------------------------------------------------------------------------------
# Sampling.

class PromptSampler:
    """Fixed-size batches, each epoch a seeded permutation of the whole set; batches run across epoch ends, so
    every batch is full and every prompt is seen exactly once per epoch.

    The cursor (epoch, position) is the whole state: `state_dict()` after k batches, loaded into a fresh sampler,
    gives exactly the batches k+1, k+2, ... of an uninterrupted run (no replay, no skipped epoch). The
    permutation of epoch e depends only on (seed, e, number of prompts)."""

    def __init__(self, prompt_set: PromptSet | Sequence[PromptRow], batch_size: int, seed: int = 0):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.rows = list(prompt_set)
        if not self.rows:
            raise ValueError("cannot sample from an empty prompt set")
        self.batch_size = batch_size
        self.seed = seed
        self.fingerprint = hashlib.sha256("\n".join(r.id for r in self.rows).encode()).hexdigest()[:16]
        self.epoch = 0
        self.position = 0
        self._order = self._permutation(0)

    def _permutation(self, epoch: int) -> list[int]:
        order = list(range(len(self.rows)))
        random.Random(f"prompts/{self.seed}/{epoch}").shuffle(order)
        return order

    def next_batch(self) -> list[PromptRow]:
        batch = []
        while len(batch) < self.batch_size:
            if self.position == len(self._order):
                self.epoch += 1
                self.position = 0
                self._order = self._permutation(self.epoch)
            take = min(self.batch_size - len(batch), len(self._order) - self.position)
            batch.extend(self.rows[i] for i in self._order[self.position:self.position + take])
            self.position += take
        return batch

    def __iter__(self) -> Iterator[list[PromptRow]]:
        while True:
            yield self.next_batch()

    @property
    def samples_seen(self) -> int:
        return self.epoch * len(self.rows) + self.position

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed, "num_prompts": len(self.rows),
                "fingerprint": self.fingerprint, "batch_size": self.batch_size}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the cursor. The prompt set and seed must be the ones the state was saved with."""
        for key, mine in (("seed", self.seed), ("num_prompts", len(self.rows)), ("fingerprint", self.fingerprint)):
            if state.get(key) != mine:
                raise ValueError(f"sampler state does not match this run: saved {key}={state.get(key)!r}, "
                                 f"now {mine!r} (same prompt sources and seed are needed for an exact resume)")
        epoch, position = int(state["epoch"]), int(state["position"])
        if epoch < 0 or not 0 <= position <= len(self.rows):
            raise ValueError(f"sampler state has an invalid cursor: epoch {epoch}, position {position}")
        self.epoch, self.position = epoch, position
        self._order = self._permutation(epoch)
