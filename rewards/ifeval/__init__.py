"""IFEval verifiable rewards: Google's 25 instruction checkers and Tulu 3's `func_name` constraints.

Public API
- `check_instructions(response, instruction_id_list, kwargs_list, *, prompt=None) -> InstructionResults`
  (`.strict`, `.loose` per instruction; `.prompt_strict`, `.prompt_loose`), Google's semantics.
- `accuracies(results) -> {prompt_level_strict, prompt_level_loose, inst_level_strict, inst_level_loose}`.
- `evaluate_file(responses_jsonl, prompts_jsonl)`: the same numbers `rlvr verify --verifier ifeval --prompts ...`
  prints (its hook lives in `rewards.ifeval.cli`).
- `score(response, ground_truth, *, prompt=None, config=IFEvalConfig())` and the registered verifiers below.
- `validate_ground_truth(ground_truth)`: build every checker up front (data loading); `warm_up()`: load NLTK and
  langdetect data in a worker initializer.

Ground truth accepted by the verifiers (dict, or the same as a JSON string):
- Google format: `{"instruction_id_list": [...], "kwargs": [{...}, ...]}` (`instruction_id` is accepted for
  `instruction_id_list`; null kwargs are ignored) — the procedural generator emits this as a JSON string;
- Tulu 3 format: `{"func_name": "validate_lowercase", "N": null, ...}` (see `rewards.ifeval.tulu`);
- a list mixing either, each element contributing its instructions.

Registered verifiers (`rewards.get_verifier(name)`), each `score` with a fixed `IFEvalConfig`:
- "ifeval" (alias "ifeval_strict"): strict, all-or-nothing — 1.0 only when every instruction is followed;
- "ifeval_fraction": strict, the fraction of instructions followed;
- "ifeval_loose": loose (Google's eight response variants), all-or-nothing;
- "ifeval_hardened": strict, all-or-nothing, and a language-detection failure counts as NOT followed;
- "ifeval_answer" (the RL reward of configs/rlvr/smollm2_ifeval.yaml): strict, the fraction of instructions
  followed, hardened, and 0 when the response no longer answers (too little text, or a loop:
  `rewards.ifeval.answer`), which Google's checkers alone would reward.
Any other combination: `make_verifier(IFEvalConfig(...))`, or `functools.partial(score, config=...)`.

Deliberate choices for RL (see `rewards.ifeval.instructions` for the full list):
- `lang_failure_passes` (default True, the reference): Google's evaluator counts text in which langdetect finds no
  letters (e.g. "1 2 3") as following the language / English-case instructions. A policy can exploit that, so
  "ifeval_hardened" turns it off; evaluation numbers use the default to stay comparable.
- The RL default is strict: loose scoring forgives a violating first or last line and `*` markers, which a
  policy learns to use. Loose applies to Google-format instructions only; Tulu constraints have one semantics.
- Responses are truncated to `max_chars` (default `rewards.base.MAX_RESPONSE_CHARS`) before checking, so every
  check is bounded in time; checkers whose reference regexes are quadratic use equivalent linear scans.
- Malformed ground truth (unknown instruction id or func_name, missing or unknown kwargs) raises `ValueError`,
  instead of the reference's random fill-in: a data error, not a zero reward.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from rewards.base import MAX_RESPONSE_CHARS, Score
from rewards.ifeval import answer, text, tulu
from rewards.ifeval.evaluation import (
    InstructionResults,
    accuracies,
    check_instructions,
    evaluate_file,
    get_checker,
    loose_variants,
)
from rewards.ifeval.ground_truth import GoogleInstructions, parse_ground_truth
from rewards.ifeval.instructions import build_checker, instruction_ids
from rewards.registry import register

__all__ = [
    "GoogleInstructions",
    "IFEvalConfig",
    "InstructionResults",
    "accuracies",
    "build_checker",
    "check_instructions",
    "evaluate_file",
    "instruction_ids",
    "loose_variants",
    "make_verifier",
    "parse_ground_truth",
    "score",
    "validate_ground_truth",
    "warm_up",
]


@dataclass(frozen=True)
class IFEvalConfig:
    """How an IFEval verdict becomes a reward."""

    mode: Literal["strict", "loose"] = "strict"  # Google's strict or loose verdicts
    reward: Literal["all", "fraction"] = "all"  # all-or-nothing, or the fraction of instructions followed
    lang_failure_passes: bool = True  # the reference: undetectable language counts as followed
    max_chars: int | None = MAX_RESPONSE_CHARS  # truncate the response first (bounded time); None: no cap
    require_answer: bool = False  # RL: 0 unless the response still answers (rewards.ifeval.answer)

    def __post_init__(self) -> None:
        if self.mode not in ("strict", "loose"):
            raise ValueError(f"IFEvalConfig.mode must be 'strict' or 'loose', got {self.mode!r}")
        if self.reward not in ("all", "fraction"):
            raise ValueError(f"IFEvalConfig.reward must be 'all' or 'fraction', got {self.reward!r}")


def warm_up() -> None:
    """Load NLTK's punkt model, the Treebank tokenizer and langdetect's profiles (~1-2 s on first use), e.g. in a
    scoring worker's initializer, so that no time-limited verifier call pays for it."""
    text.word_tokenize("Warm up. This loads punkt and the word tokenizer.")
    text.detect_language("Warm up: this loads the language profiles.")


def validate_ground_truth(ground_truth: Any, *, config: IFEvalConfig = IFEvalConfig()) -> int:
    """Parse a ground truth and build all its checkers, as a data loader should before training: returns the
    number of instructions, raises `ValueError` naming what is wrong."""
    count = 0
    for unit in parse_ground_truth(ground_truth):
        if isinstance(unit, GoogleInstructions):
            for iid, kwargs in zip(unit.instruction_ids, unit.kwargs):
                get_checker(iid, kwargs, lang_failure_passes=config.lang_failure_passes)
                count += 1
        else:
            tulu.validate_constraint(unit)
            count += 1
    return count


def score(response: str, ground_truth: Any, *, prompt: str | None = None, config: IFEvalConfig = IFEvalConfig()) -> Score:
    """Reward for `response` under an IFEval ground truth (any accepted format), per `config`."""
    verdicts: list[bool] = []
    names: list[str] = []
    ground_truth_units = parse_ground_truth(ground_truth)
    for unit in ground_truth_units:
        if isinstance(unit, GoogleInstructions):
            res = check_instructions(
                response,
                unit.instruction_ids,
                unit.kwargs,
                prompt=prompt,
                loose=config.mode == "loose",
                lang_failure_passes=config.lang_failure_passes,
                max_chars=config.max_chars,
            )
            verdicts += res.loose if config.mode == "loose" else res.strict
            names += unit.instruction_ids
        else:
            text = response if config.max_chars is None else response[: config.max_chars]
            verdicts.append(tulu.check_constraint(text, unit))
            names.append(unit["func_name"])
    followed = sum(verdicts)
    failed = [n for n, ok in zip(names, verdicts) if not ok]
    value = followed / len(verdicts) if config.reward == "fraction" else float(followed == len(verdicts))
    reason = f"{followed}/{len(verdicts)} instructions followed ({config.mode})"
    if failed:
        reason += "; not followed: " + ", ".join(failed[:5]) + (" ..." if len(failed) > 5 else "")
    if config.require_answer:
        problem = _answer_problem(response, ground_truth_units, config, prompt)
        if problem is not None:
            return Score(0.0, f"{problem} ({reason})")
    return Score(value, reason)


def _answer_problem(response: str, units: list, config: IFEvalConfig, prompt: str | None) -> str | None:
    """rewards.ifeval.answer's verdict on the instructions of the ground truth."""
    ids, kwargs = [], []
    for unit in units:
        if isinstance(unit, GoogleInstructions):
            ids += list(unit.instruction_ids)
            kwargs += list(unit.kwargs)
    text = response if config.max_chars is None else response[: config.max_chars]
    return answer.instructions_answer_problem(text, ids, kwargs, prompt=prompt)


def make_verifier(config: IFEvalConfig, name: str = "ifeval"):
    """A registry-compatible verifier `(response, ground_truth, *, prompt=None) -> Score` with a fixed config."""

    def verifier(response: str, ground_truth: Any, *, prompt: str | None = None) -> Score:
        return score(response, ground_truth, prompt=prompt, config=config)

    verifier.__name__ = verifier.__qualname__ = name
    verifier.__doc__ = f"IFEval verifier with {config}."
    verifier.config = config  # type: ignore[attr-defined]
    verifier.warm_up = warm_up  # type: ignore[attr-defined]  # NLTK/langdetect data, once per scoring worker
    return verifier


ifeval = register("ifeval", "ifeval_strict")(make_verifier(IFEvalConfig(), "ifeval"))
ifeval_fraction = register("ifeval_fraction")(make_verifier(IFEvalConfig(reward="fraction"), "ifeval_fraction"))
ifeval_loose = register("ifeval_loose")(make_verifier(IFEvalConfig(mode="loose"), "ifeval_loose"))
ifeval_hardened = register("ifeval_hardened")(
    make_verifier(IFEvalConfig(lang_failure_passes=False), "ifeval_hardened")
)
ifeval_answer = register("ifeval_answer")(
    make_verifier(IFEvalConfig(reward="fraction", lang_failure_passes=False, require_answer=True), "ifeval_answer")
)
