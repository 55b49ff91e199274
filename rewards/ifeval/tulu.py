"""Tulu 3 RLVR IFEval constraints: ground truth `{"func_name": ..., <kwargs>}` with open-instruct's semantics.

Reference: allenai/open-instruct `open_instruct/if_functions.py` and its `verify_ifeval_sample` dispatch (read for
semantics; our own code). These functions are NOT Google's checkers: e.g. keyword and letter frequencies must
match exactly, words are `str.split()` pieces, sentences come from a regex, paragraphs are split on "* * *", and
"around" allows ±10% (at least 1). They are scored as their authors scored the Tulu 3 training data.

Dispatch, as in `verify_ifeval_sample`: keys whose value is null are dropped; the function runs on
`response.split("<|assistant|>\\n")[-1].strip()`, or on the raw response when the ground truth has no key besides
`func_name`. Deliberate differences, none of which changes a verdict the reference returns:
- an unknown function, an unexpected or missing argument raises `ValueError` naming it (the reference raises
  KeyError/TypeError);
- `validate_response_language` on text langdetect cannot classify returns False (the reference raises);
- `validate_json_format` on JSON nested beyond the recursion limit returns False (the reference raises);
- the placeholder and title regexes are computed by equivalent linear scans (bounded time).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import rewards.ifeval.text as T
from rewards.ifeval.instructions import count_placeholders

_WORD_RE = re.compile(r"\b\w+\b")
_SENTENCE_SPLIT_RE = re.compile(r"(?<!\w\.\w.)(?<![A-Z][a-z]\.)(?<=\.|\?|!)\s")
_HIGHLIGHT_RE = re.compile(r"\*(.*?)\*")
_CAPITAL_WORD_RE = re.compile(r"\b[A-Z]+\b")


def _quantified(count: int, n: int, quantifier: str, around: int) -> bool:
    if quantifier == "at least":
        return count >= n
    if quantifier == "at most":
        return count <= n
    if quantifier == "around":
        return abs(count - n) <= around
    return False  # the reference answers False for an unknown quantifier


def verify_keywords(text: str, keyword_list: list[str]) -> bool:
    lowered = text.lower()
    return all(k.lower() in lowered for k in keyword_list)


def verify_keyword_frequency(text: str, word: str, N: int) -> bool:
    target = word.lower()
    return sum(1 for w in _WORD_RE.findall(text.lower()) if w == target) == N


def validate_forbidden_words(text: str, forbidden_words: list[str]) -> bool:
    lowered = text.lower()
    return not any(w.lower() in lowered for w in forbidden_words)


def verify_letter_frequency(text: str, letter: str, N: int) -> bool:
    if len(letter) != 1:
        raise ValueError(f"verify_letter_frequency: letter must be one character, got {letter!r}")
    return text.count(letter) == N  # case-sensitive, exact


def validate_response_language(text: str, language: str) -> bool:
    return T.detect_language(text) == language


def verify_paragraph_count(text: str, N: int) -> bool:
    cleaned = "\n".join(line.strip() for line in text.splitlines()).strip()
    paragraphs = cleaned.split("* * *")
    if any(not p.strip() for p in paragraphs):
        return False
    return len(paragraphs) == N


def validate_word_constraint(text: str, N: int, quantifier: str) -> bool:
    return _quantified(len(text.strip().split()), N, quantifier, max(round(N * 0.1), 1))


def verify_sentence_constraint(text: str, N: int, quantifier: str) -> bool:
    return _quantified(len(_SENTENCE_SPLIT_RE.split(text)), N, quantifier, 1)


def validate_paragraphs(text: str, N: int, first_word: str, i: int) -> bool:
    paragraphs = text.split("\n\n")
    if len(paragraphs) != N:
        return False
    return paragraphs[i - 1].strip().startswith(first_word)


def verify_postscript(text: str, postscript_marker: str) -> bool:
    at = text.find(postscript_marker)
    return at >= 0 and len(text[at:].strip()) > len(postscript_marker)


def validate_placeholders(text: str, N: int) -> bool:
    return count_placeholders(text) >= N  # == len(re.findall(r"\[(.*?)\]", text))


def verify_bullet_points(text: str, N: int) -> bool:
    return sum(1 for line in text.split("\n") if line.strip().startswith(("*", "-"))) == N


def validate_title(text: str) -> bool:
    # re.findall(r"<<(.*?)>>", text) is non-empty iff some line has "<<" followed by a later ">>"
    for line in text.split("\n"):
        i = line.find("<<")
        if i >= 0 and line.find(">>", i + 2) >= 0:
            return True
    return False


def validate_choice(text: str, options: list[str]) -> bool:
    return any(option in text for option in options)


def validate_highlighted_sections(text: str, N: int) -> bool:
    return len(_HIGHLIGHT_RE.findall(text)) >= N


def validate_sections(text: str, N: int, section_splitter: str) -> bool:
    pattern = r"\s?" + re.escape(section_splitter) + r"\s?\d+\s?"
    return len(re.split(pattern, text, flags=re.IGNORECASE)) - 1 >= N


def validate_json_format(text: str) -> bool:
    try:
        json.loads(text)
    except (ValueError, RecursionError):
        return False
    return True


def validate_repeat_prompt(text: str, original_prompt: str) -> bool:
    return text.startswith(original_prompt)


def validate_two_responses(text: str) -> bool:
    if text.count("******") != 1:
        return False
    first, second = text.split("******")
    return first.strip() != second.strip()


def validate_uppercase(text: str) -> bool:
    return text == text.upper()


def validate_lowercase(text: str) -> bool:
    return text == text.lower()


def validate_frequency_capital_words(text: str, N: int, quantifier: str) -> bool:
    return _quantified(len(_CAPITAL_WORD_RE.findall(text)), N, quantifier, max(round(N * 0.1), 1))


def validate_end(text: str, end_phrase: str) -> bool:
    return text.endswith(end_phrase)


def validate_quotation(text: str) -> bool:
    return text.startswith('"') and text.endswith('"')


def validate_no_commas(text: str) -> bool:
    return "," not in text


FUNCTIONS: dict[str, Callable[..., bool]] = {
    fn.__name__: fn
    for fn in (
        verify_keywords, verify_keyword_frequency, validate_forbidden_words, verify_letter_frequency,
        validate_response_language, verify_paragraph_count, validate_word_constraint, verify_sentence_constraint,
        validate_paragraphs, verify_postscript, validate_placeholders, verify_bullet_points, validate_title,
        validate_choice, validate_highlighted_sections, validate_sections, validate_json_format,
        validate_repeat_prompt, validate_two_responses, validate_uppercase, validate_lowercase,
        validate_frequency_capital_words, validate_end, validate_quotation, validate_no_commas,
    )
}  # fmt: skip
_PARAMS = {name: fn.__code__.co_varnames[1 : fn.__code__.co_argcount] for name, fn in FUNCTIONS.items()}


def parse_constraint(ground_truth: dict[str, Any] | str) -> dict[str, Any]:
    """A Tulu constraint as a dict (JSON strings parsed); must carry a known `func_name`."""
    constraint = json.loads(ground_truth) if isinstance(ground_truth, str) else dict(ground_truth)
    if not isinstance(constraint, dict) or "func_name" not in constraint:
        raise ValueError(f"Tulu IFEval ground truth needs a 'func_name': {ground_truth!r:.200}")
    name = constraint["func_name"]
    if name not in FUNCTIONS:
        raise ValueError(f"unknown Tulu IFEval func_name {name!r}; known: {', '.join(sorted(FUNCTIONS))}")
    return constraint


def validate_constraint(ground_truth: dict[str, Any] | str) -> tuple[str, dict[str, Any], bool]:
    """(func_name, its non-null arguments, whether the ground truth has any key besides func_name); raises
    `ValueError` for an unknown function or unexpected/missing arguments."""
    constraint = parse_constraint(ground_truth)
    name = constraint.pop("func_name")
    args = {k: v for k, v in constraint.items() if v is not None}
    if not constraint:
        return name, args, False
    params = _PARAMS[name]
    unexpected = sorted(set(args) - set(params))
    missing = [p for p in params if p not in args]
    if unexpected or missing:
        raise ValueError(f"Tulu IFEval {name}: unexpected argument(s) {unexpected}, missing {missing} in {args!r:.200}")
    return name, args, True


def check_constraint(response: str, ground_truth: dict[str, Any] | str) -> bool:
    """Whether `response` follows one Tulu constraint, as open-instruct scores it."""
    name, args, has_args = validate_constraint(ground_truth)
    if not has_args:  # no key besides func_name: the reference passes the raw output
        return bool(FUNCTIONS[name](response))
    answer = response.split("<|assistant|>\n")[-1].strip()
    return bool(FUNCTIONS[name](answer, **args))
