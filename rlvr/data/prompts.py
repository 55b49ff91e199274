"""RLVR prompts in the Tulu 3 RLVR schema, validated and tokenised once, at load time (the sampler is
rlvr.data.sampler, the source readers rlvr.data.sources).

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
- `ifeval:SOURCE`: Google's IFEval rows (`key`, `prompt`, `instruction_id_list`, `kwargs`: input_data.jsonl or the
  hub's google/IFEval) converted to the schema: one user turn with the prompt, `ground_truth` = the instructions
  in Google's format (JSON), `dataset` = "ifeval", id `ifeval-<key>`. A source whose first row has `prompt` and
  `instruction_id_list` but no `messages` is converted the same way without the prefix.
- Tulu 3's RLVR rows (allenai/RLVR-GSM-MATH-IF-Mixed-Constraints: `messages`, `ground_truth`, `dataset` in
  gsm8k/MATH/ifeval with Tulu's `func_name` constraints) are the schema itself; their extra columns
  (`constraint_type`, `constraint`) are kept in `extra`.

Malformed rows are found here, never mid-training (RELIABILITY.md #8): each is counted under a reason with its id
and `source:line` in a `DropReport`. Reasons: bad_json, not_an_object, empty_messages, bad_messages,
missing_ground_truth, missing_dataset, bad_gsm8k_answer, bad_ifeval_row, too_long (needs a tokenizer and max_prompt_tokens),
unknown_verifier. An unknown verifier name fails the load at once (a config error, not bad data); otherwise the
load fails when the dropped fraction exceeds `max_dropped_fraction`, naming reasons and file:line examples.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from core.logging import get_logger
from core.tokens import chat_ids
from rewards.registry import UnknownVerifierError, get_verifier
from rlvr.data.sources import PromptDataError, RawRow, load_source

log = get_logger(__name__)

__all__ = ["PromptDataError", "PromptRow", "DroppedRow", "DropReport", "PromptSet", "load_prompts",
           "with_verifiers", "without_held_out"]

ROLES = ("system", "user", "assistant")
CONVERSION_ERRORS = {"gsm8k_to_row": "bad_gsm8k_answer", "ifeval_to_row": "bad_ifeval_row"}
EXAMPLES_PER_REASON = 3


@dataclass(frozen=True)
class PromptRow:
    """One validated prompt. `where` is `source:line` (line = 1-based jsonl line, or row number elsewhere)."""

    id: str
    messages: list[dict[str, str]]
    ground_truth: Any
    dataset: str | list[str]
    source: str
    line: int
    prompt_ids: list[int] | None = None  # core.tokens.chat_ids with the generation prompt, when a tokenizer was given
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def prompt_tokens(self) -> int | None:
        return None if self.prompt_ids is None else len(self.prompt_ids)

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


def with_verifiers(prompts: PromptSet, mapping: dict[str, str]) -> PromptSet:
    """`prompts` with each verifier name that is a key of `mapping` (case-insensitive) replaced by its value
    (data.train_verifiers: train on one reward, report another); unknown target names raise PromptDataError."""
    if not mapping:
        return prompts
    lowered = {k.lower(): v for k, v in mapping.items()}
    for target in lowered.values():
        try:
            get_verifier(target)
        except UnknownVerifierError as err:
            raise PromptDataError(f"data.train_verifiers: {err}") from None

    def swap(dataset: str | list[str]) -> str | list[str]:
        if isinstance(dataset, str):
            return lowered.get(dataset.lower(), dataset)
        return [lowered.get(d.lower(), d) for d in dataset]

    rows = [dataclasses.replace(r, dataset=swap(r.dataset)) for r in prompts.rows]
    return PromptSet(rows, prompts.report, prompts.sources)


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
    candidates: list[tuple[RawRow, dict, str]] = []  # (raw, schema row, id) of rows that passed the structural checks
    seen_ids: Counter[str] = Counter()

    for spec in sources:
        raws, converter = load_source(spec)
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
                    report.add(CONVERSION_ERRORS.get(converter.__name__, "bad_row"), row_id, where, str(err))
                    continue
                if row.get("id") not in (None, ""):
                    row_id = str(row["id"])
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

    prompt_ids: list[list[int] | None] = [None] * len(candidates)
    if tokenizer is not None:  # the one tokenisation of each prompt: the generators get these ids
        prompt_ids = [chat_ids(tokenizer, row["messages"]) for _, row, _ in candidates]

    rows: list[PromptRow] = []
    for (raw, row, row_id), ids in zip(candidates, prompt_ids):
        n_tokens = None if ids is None else len(ids)
        if max_prompt_tokens is not None and n_tokens is not None and n_tokens > max_prompt_tokens:
            report.add("too_long", row_id, f"{raw.source}:{raw.line}",
                       f"{n_tokens} prompt tokens > max_prompt_tokens {max_prompt_tokens}")
            continue
        rows.append(PromptRow(
            id=row_id, messages=[{"role": m["role"], "content": m["content"]} for m in row["messages"]],
            ground_truth=row["ground_truth"], dataset=row["dataset"], source=raw.source, line=raw.line,
            prompt_ids=ids, extra={k: v for k, v in row.items() if k not in _KNOWN_KEYS}))

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


def _check_verifiers(candidates: list[tuple[RawRow, dict, str]], report: DropReport,
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
