"""Does a response still answer the prompt? The condition an RL reward adds to Google's checkers.

Google's checkers look only at the constraint: an empty reply has no commas, no forbidden words and fewer than 300
words, and a reply with no letters passes the English-case checks. A policy rewarded by the checkers alone
learns those answers (and the base SmolLM2 models already fall into loops that repeat one sentence until the
length cap). `answer_problem` names what disqualifies a response, or returns None:

- too little text: fewer than `min_letters` letters (any script, so a Japanese or Hindi answer counts the same
  way as an English one) once a repeated request (`combination:repeat_prompt`) is removed from its start;
- a loop: among its sentences and lines of at least three words, more than `max_duplicate_fraction` are
  repeats of an earlier one.

The reward verifier "ifeval_answer" (rewards.ifeval) multiplies the fraction of instructions followed by this
gate. Evaluation keeps Google's semantics: the gate is never part of the reported IFEval accuracies.
"""

from __future__ import annotations

import re

MIN_LETTERS = 40
SHORT_ANSWER_LETTERS = 10  # a fixed-phrase answer ("My answer is yes.") is legitimately short
MAX_DUPLICATE_FRACTION = 0.5
_UNITS_RE = re.compile(r"(?<=[.!?])\s+|\n+")
_SPACES_RE = re.compile(r"\s+")


def letter_count(text: str) -> int:
    return sum(ch.isalpha() for ch in text)


def duplicate_fraction(text: str) -> float:
    """Share of the sentences/lines (of at least three words) that repeat an earlier one, case and spacing
    ignored; 0 for fewer than four such units."""
    units = [_SPACES_RE.sub(" ", u).strip().lower() for u in _UNITS_RE.split(text)]
    units = [u for u in units if len(u.split()) >= 3]
    if len(units) < 4:
        return 0.0
    return 1.0 - len(set(units)) / len(units)


def answer_problem(response: str, *, repeated_prompt: str | None = None, min_letters: int = MIN_LETTERS,
                   max_duplicate_fraction: float = MAX_DUPLICATE_FRACTION) -> str | None:
    """Why `response` does not count as an answer (a short reason), or None when it does."""
    text = response.strip()
    if repeated_prompt and text.lower().startswith(repeated_prompt.strip().lower()):
        text = text[len(repeated_prompt.strip()):].strip()
    letters = letter_count(text)
    if letters < min_letters:
        return f"no answer: {letters} letters (fewer than {min_letters}) besides a repeated request"
    dup = duplicate_fraction(text)
    if dup > max_duplicate_fraction:
        return f"no answer: a loop ({dup:.0%} of its sentences repeat an earlier one)"
    return None
