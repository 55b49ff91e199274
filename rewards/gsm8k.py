"""GSM8K answer checker: pure Python, exact rational comparison, bounded work on any input.

Registered as `gsm8k` (also `gsm8k_test`, `gsm8k_train`).

Extraction order (the first rule that yields a number wins; within a rule the LAST occurrence of the marker
counts, since models restate and correct themselves):
1. `####` marker (GSM8K's own format): the first number after the last `####`;
2. `\\boxed{...}`: the last box (braces balanced, `\\fbox` too); if it contains `=`, the part after the last `=`;
   then the first number in it;
3. "answer is" (case-insensitive; covers "the answer is", "the final answer is"): first number after it;
4. "final answer:" (case-insensitive): first number after it;
5. the last number anywhere in the response.
A marker followed by no number (within 200 characters) falls through to the next rule.

Normalisation: thousands commas (`1,234`, LaTeX `1{,}234`, `1\\,234`), currency signs (`$ € £ ¥`, `\\$`), a unit
or `%` after the number, `\\frac{a}{b}` and `a/b`, trailing `.0`/`.00`, unicode minus. Numbers compare exactly as
`fractions.Fraction` (so `18.00 == 18`, `0.5 == 1/2`), never as floats.

Ground truth: a bare number (`"18"`, `"1,234"`, `"-3"`, `"0.5"`; int/float/Fraction accepted) or a full GSM8K
answer ending in `#### N`. An unparseable ground truth raises ValueError (a data error, counted as such).

Bounds: responses longer than MAX_RESPONSE_CHARS keep only their tail (the answer is at the end); number tokens
longer than 64 characters are ignored; every regex is linear (no nested quantifiers over the same characters).
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Any

from rewards.base import MAX_RESPONSE_CHARS, Score
from rewards.registry import register

_MAX_NUMBER_CHARS = 64
_WINDOW = 200  # characters after a marker searched for its number

# sign? currency? integer (with valid thousands groups or plain digits) decimals? (/denominator)?
_NUMBER = re.compile(
    r"(?<![\w.,])(?P<sign>[-−])?[ \t]?(?:\\?[$€£¥][ \t]?)?"
    r"(?P<int>\d{1,3}(?:,\d{3})+|\d+)(?P<dec>\.\d+)?(?:[ \t]?/[ \t]?(?P<den>\d+))?(?!\d)"
)
_LATEX_FRAC = re.compile(r"\\[dt]?frac\{[ \t]?(-?\d{1,30})[ \t]?\}\{[ \t]?(\d{1,30})[ \t]?\}")
_ANSWER_IS = re.compile(r"answer\s{0,5}is", re.IGNORECASE)
_FINAL_ANSWER = re.compile(r"final\s{0,5}answer\s{0,5}:", re.IGNORECASE)


def _normalise(text: str) -> str:
    text = text.replace("{,}", ",").replace("\\,", ",").replace("\\!", "").replace("\\%", "%")
    return _LATEX_FRAC.sub(r"\1/\2", text)


def _to_fraction(m: re.Match) -> Fraction | None:
    token = m.group(0)
    if len(token) > _MAX_NUMBER_CHARS:
        return None
    value = Fraction(m.group("int").replace(",", "") + (m.group("dec") or ""))
    den = m.group("den")
    if den is not None:
        if int(den) == 0:
            return None
        value /= int(den)
    return -value if m.group("sign") else value


def _first_number(segment: str) -> Fraction | None:
    for m in _NUMBER.finditer(segment):
        value = _to_fraction(m)
        if value is not None:
            return value
    return None


def _last_number(text: str) -> Fraction | None:
    value = None
    for m in _NUMBER.finditer(text):
        v = _to_fraction(m)
        if v is not None:
            value = v
    return value


def _last_boxed(text: str) -> str | None:
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    brace = text.find("{", start, start + 10)
    if brace < 0:
        return None
    depth, end_limit = 0, min(len(text), brace + _WINDOW)
    for i in range(brace, end_limit):
        c = text[i]
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return text[brace + 1:i]
    return text[brace + 1:end_limit]  # unbalanced: use what there is


def _after_last(pattern: re.Pattern, text: str) -> str | None:
    last = None
    for m in pattern.finditer(text):
        last = m
    return None if last is None else text[last.end():last.end() + _WINDOW]


def extract_answer(response: str) -> tuple[Fraction | None, str]:
    """The response's final answer as a Fraction and the rule that found it (or `(None, "none")`)."""
    text = _normalise(response[-MAX_RESPONSE_CHARS:])
    pos = text.rfind("####")
    if pos >= 0:
        value = _first_number(text[pos + 4:pos + 4 + _WINDOW])
        if value is not None:
            return value, "####"
    boxed = _last_boxed(text)
    if boxed is not None:
        value = _first_number(boxed.rpartition("=")[2])
        if value is not None:
            return value, "boxed"
    for rule, pattern in (("answer is", _ANSWER_IS), ("final answer:", _FINAL_ANSWER)):
        segment = _after_last(pattern, text)
        if segment is not None:
            value = _first_number(segment)
            if value is not None:
                return value, rule
    value = _last_number(text)
    return (value, "last number") if value is not None else (None, "none")


def parse_ground_truth(ground_truth: Any) -> Fraction:
    """A bare number or a GSM8K answer ending in `#### N`, as a Fraction; ValueError if it is neither."""
    if isinstance(ground_truth, bool):
        raise ValueError(f"GSM8K ground truth must be a number, got {ground_truth!r}")
    if isinstance(ground_truth, int | Fraction):
        return Fraction(ground_truth)
    if isinstance(ground_truth, float):
        return Fraction(repr(ground_truth))
    if not isinstance(ground_truth, str):
        raise ValueError(f"GSM8K ground truth must be a string or number, got {type(ground_truth).__name__}")
    text = _normalise(ground_truth[-MAX_RESPONSE_CHARS:])
    if "####" in text:
        text = text.rpartition("####")[2]
    numbers = [v for v in (_to_fraction(m) for m in _NUMBER.finditer(text)) if v is not None]
    if len(numbers) != 1:
        raise ValueError(f"GSM8K ground truth {ground_truth[:80]!r} is not a single number or '#### N' answer")
    return numbers[0]


def _fmt(value: Fraction) -> str:
    return str(value.numerator) if value.denominator == 1 else f"{float(value):g}"


@register("gsm8k", "gsm8k_test", "gsm8k_train")
def verify_gsm8k(response: str, ground_truth: Any, *, prompt: str | None = None) -> Score:
    """1.0 if the response's final answer equals the ground truth exactly, else 0.0 (reason says why)."""
    if not isinstance(response, str):
        raise TypeError(f"response must be a string, got {type(response).__name__}")
    expected = parse_ground_truth(ground_truth)
    got, rule = extract_answer(response)
    if got is None:
        return Score(0.0, "no number found")
    if got == expected:
        return Score(1.0, f"correct ({rule})")
    return Score(0.0, f"wrong: got {_fmt(got)} ({rule}), expected {_fmt(expected)}")
