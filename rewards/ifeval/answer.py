"""Does a response still answer the prompt? The condition an RL reward adds to Google's checkers.

Google's checkers look only at the constraint: an empty reply has no commas, no forbidden words and fewer than 300
words, and a reply with no letters passes the English-case checks. A policy rewarded by the checkers alone
learns those answers (and the base SmolLM2 models already fall into loops that repeat one sentence until the
length cap). `answer_problem` names what disqualifies a response, or returns None:

- too little text: fewer than `min_letters` letters (any script, so a Japanese or Hindi answer counts the same
  way as an English one) once a repeated request (`combination:repeat_prompt`) is removed from its start, and,
  when the prompt is given, counting only the words the prompt does not contain: the first IFEval run
  (README, "IFEval") learnt to answer "Write a 300+ word summary of <url> ... highlight at least 3 sections, for
  example *highlighted section part 1*, ..." with the URL and the three example highlights alone, which passed a
  plain letter count and the highlight checker;
- a loop: among its sentences and lines of at least three words, more than `max_duplicate_fraction` are
  repeats of an earlier one; or, for loops inside one long sentence, more than `max_duplicate_fraction` of its
  word 4-grams repeat an earlier one (run C learnt "*she* loves *her* favorite breakfast" until the length cap);
- mostly symbols: more than half of its non-space characters are neither letters nor digits (run C ended 14
  responses with rows of `******` until the length cap);
- placeholder highlights: a markdown highlight (`*...*`, what Google's highlight checker counts) that says
  "highlight" (run C learnt to answer "highlight at least 3 sections" with "*highlighted text section*" three
  times, which passes the checker), or highlights of which fewer than half are distinct (three or more).

The reward verifier "ifeval_answer" (rewards.ifeval) multiplies the fraction of instructions followed by this
gate. Evaluation keeps Google's semantics: the gate is never part of the reported IFEval accuracies.
"""

from __future__ import annotations

import re

MIN_LETTERS = 40
SHORT_ANSWER_LETTERS = 10  # a fixed-phrase answer ("My answer is yes.") is legitimately short
MAX_DUPLICATE_FRACTION = 0.5
_UNITS_RE = re.compile(r"(?<=[.!?])\s+|\n+")
_WORD_RE = re.compile(r"\w+")
_SPACES_RE = re.compile(r"\s+")
_HIGHLIGHT_RE = re.compile(r"\*([^\n*]+)\*")  # Google's detectable_format:number_highlighted_sections pattern
_PLACEHOLDER_RE = re.compile(r"\bhighlight", re.IGNORECASE)
NGRAM = 4


def letter_count(text: str) -> int:
    return sum(ch.isalpha() for ch in text)


def new_letter_count(text: str, prompt: str) -> int:
    """Letters of the words of `text` that are not words of `prompt` (case ignored)."""
    seen = {w.lower() for w in _WORD_RE.findall(prompt)}
    return sum(letter_count(w) for w in _WORD_RE.findall(text) if w.lower() not in seen)


def duplicate_fraction(text: str) -> float:
    """Share of the sentences/lines (of at least three words) that repeat an earlier one, case and spacing
    ignored; 0 for fewer than four such units."""
    units = [_SPACES_RE.sub(" ", u).strip().lower() for u in _UNITS_RE.split(text)]
    units = [u for u in units if len(u.split()) >= 3]
    if len(units) < 4:
        return 0.0
    return 1.0 - len(set(units)) / len(units)


def repeated_ngram_fraction(text: str, n: int = NGRAM) -> float:
    """Share of the word n-grams (case ignored) that occurred earlier in `text`; 0 below 4n words."""
    words = [w.lower() for w in _WORD_RE.findall(text)]
    if len(words) < 4 * n:
        return 0.0
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    return 1.0 - len(set(grams)) / len(grams)


def symbol_fraction(text: str) -> float:
    """Share of the non-space characters that are neither letters nor digits."""
    chars = [ch for ch in text if not ch.isspace()]
    return sum(not ch.isalnum() for ch in chars) / len(chars) if chars else 0.0


def placeholder_highlight(text: str) -> str | None:
    """The first markdown highlight that names itself a highlight, or the most repeated one when three or more
    highlights are fewer than half distinct; else None."""
    bodies = [_SPACES_RE.sub(" ", m.group(1)).strip().lower() for m in _HIGHLIGHT_RE.finditer(text)]
    bodies = [b for b in bodies if b]
    for body in bodies:
        if _PLACEHOLDER_RE.search(body):
            return f"*{body}*"
    if len(bodies) >= 3 and len(set(bodies)) < len(bodies) / 2:
        return f"*{max(set(bodies), key=bodies.count)}*"
    return None


def answer_problem(response: str, *, prompt: str | None = None, repeated_prompt: str | None = None,
                   min_letters: int = MIN_LETTERS, max_duplicate_fraction: float = MAX_DUPLICATE_FRACTION
                   ) -> str | None:
    """Why `response` does not count as an answer (a short reason), or None when it does. With `prompt`, only
    letters of words the prompt does not contain count towards `min_letters`."""
    text = response.strip()
    if repeated_prompt and text.lower().startswith(repeated_prompt.strip().lower()):
        text = text[len(repeated_prompt.strip()):].strip()
    letters = letter_count(text) if prompt is None else new_letter_count(text, prompt)
    if letters < min_letters:
        where = "besides a repeated request" if prompt is None else "in words the prompt does not contain"
        return f"no answer: {letters} letters (fewer than {min_letters}) {where}"
    dup = duplicate_fraction(text)
    if dup > max_duplicate_fraction:
        return f"no answer: a loop ({dup:.0%} of its sentences repeat an earlier one)"
    dup = repeated_ngram_fraction(text)
    if dup > max_duplicate_fraction:
        return f"no answer: a loop ({dup:.0%} of its word {NGRAM}-grams repeat an earlier one)"
    symbols = symbol_fraction(text)
    if symbols > 0.5:
        return f"no answer: mostly symbols ({symbols:.0%} of its non-space characters)"
    placeholder = placeholder_highlight(text)
    if placeholder is not None:
        return f"no answer: a placeholder highlight {placeholder[:40]!r}"
    return None


def instructions_answer_problem(response: str, instruction_ids: list[str], kwargs: list[dict | None], *,
                                prompt: str | None = None) -> str | None:
    """`answer_problem` for a prompt with Google's instructions: the request to repeat
    (`combination:repeat_prompt`) and the short fixed answers (`detectable_format:constrained_response`, whose
    options the prompt lists, so its words count) taken from them."""
    repeated, min_letters = None, MIN_LETTERS
    for iid, kw in zip(instruction_ids, kwargs):
        if iid == "combination:repeat_prompt":
            repeated = (kw or {}).get("prompt_to_repeat")
        elif iid == "detectable_format:constrained_response":
            min_letters, prompt = SHORT_ANSWER_LETTERS, None
    return answer_problem(response, prompt=prompt, repeated_prompt=repeated, min_letters=min_letters)
