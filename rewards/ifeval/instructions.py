"""The 25 IFEval instruction checkers, with the semantics of Google's evaluator.

Reference: google-research `instruction_following_eval/instructions.py` (read for semantics; this is our own code).
`build_checker(instruction_id, kwargs)` validates the kwargs once and returns `check(text) -> bool`.

Where we deliberately differ from the reference (verdicts on the IFEval data are unchanged):
- Missing or invalid kwargs raise `ValueError` naming the instruction, instead of the reference's silent random
  choice (a random constraint makes a reward meaningless).
- Patterns the reference runs as regexes that can take quadratic time on adversarial text (placeholders
  `\\[.*?\\]`, bullets `^\\s*\\*[^*].*$`, titles `<<[^\\n]+>>`, postscript `\\s*p\\.\\s?s\\..*$`) are computed by linear
  scans that give the same counts; tests compare them with the regexes on random text.
- A JSON answer nested deeper than Python's recursion limit is "not JSON" (the reference crashes).
- `lang_failure_passes`: the reference counts a language-detection failure (text with no letters, e.g. "123")
  as following `language:response_language`, `change_case:english_capital` and `english_lowercase`. That is
  the default, for comparable evaluation numbers; for RL set it False, or a policy learns to answer in digits.

Keyword, forbidden-word, keyword-frequency, postscript-marker and section-splitter strings are used as regexes, as
in the reference; they come from the ground truth, never from the model's response.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import rewards.ifeval.text as T

Check = Callable[[str], bool]

RELATIONS = ("less than", "at least")

_BUILDERS: dict[str, Callable[..., Check]] = {}


def _instruction(instruction_id: str):
    def decorate(fn: Callable[..., Check]) -> Callable[..., Check]:
        _BUILDERS[instruction_id] = fn
        return fn

    return decorate


def instruction_ids() -> list[str]:
    return sorted(_BUILDERS)


def build_checker(instruction_id: str, kwargs: dict[str, Any] | None = None, *, lang_failure_passes: bool = True) -> Check:
    """The checker for one instruction. `None` values in `kwargs` are ignored (the HF copy of IFEval fills every
    key with null); unknown keys and missing required ones raise `ValueError`."""
    try:
        builder = _BUILDERS[instruction_id]
    except KeyError:
        raise ValueError(f"unknown IFEval instruction id {instruction_id!r}; known: {', '.join(instruction_ids())}") from None
    args = {k: v for k, v in (kwargs or {}).items() if v is not None}
    if builder in _LANGUAGE_BUILDERS:
        args["lang_failure_passes"] = lang_failure_passes
    try:
        return builder(**args)
    except (TypeError, AttributeError, re.error) as err:  # unexpected/missing keyword, wrong type, bad pattern
        raise ValueError(f"bad kwargs for IFEval instruction {instruction_id!r}: {kwargs!r} ({err})") from None


def _compare(count: int, threshold: int, relation: str) -> bool:
    return count < threshold if relation == "less than" else count >= threshold


def _relation(relation: str, where: str) -> str:
    if relation not in RELATIONS:
        raise ValueError(f"{where}: relation must be one of {RELATIONS}, got {relation!r}")
    return relation


def _int(value: Any, name: str, where: str) -> int | float:
    """A count threshold: any real number compares as in the reference; strings, bools and null do not."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{where}: {name} must be a number, got {value!r}")
    return value


# --- keywords ---------------------------------------------------------------------------------------------------


@_instruction("keywords:existence")
def _keywords_existence(*, keywords: list[str]) -> Check:
    if not keywords:
        raise ValueError("keywords:existence: keywords must be a non-empty list")
    patterns = [re.compile(k, re.IGNORECASE) for k in sorted(keywords)]
    return lambda text: all(p.search(text) for p in patterns)


@_instruction("keywords:frequency")
def _keyword_frequency(*, keyword: str, frequency: int, relation: str) -> Check:
    where = "keywords:frequency"
    if not keyword:
        raise ValueError(f"{where}: keyword must be non-empty")
    pattern = re.compile(keyword.strip(), re.IGNORECASE)
    frequency, relation = _int(frequency, "frequency", where), _relation(relation, where)
    return lambda text: _compare(len(pattern.findall(text)), frequency, relation)


@_instruction("keywords:forbidden_words")
def _forbidden_words(*, forbidden_words: list[str]) -> Check:
    if not forbidden_words:
        raise ValueError("keywords:forbidden_words: forbidden_words must be a non-empty list")
    patterns = [re.compile(r"\b" + w + r"\b", re.IGNORECASE) for w in sorted(set(forbidden_words))]
    return lambda text: not any(p.search(text) for p in patterns)


@_instruction("keywords:letter_frequency")
def _letter_frequency(*, letter: str, let_frequency: int, let_relation: str) -> Check:
    where = "keywords:letter_frequency"
    if not isinstance(letter, str) or len(letter) != 1:
        raise ValueError(f"{where}: letter must be one character, got {letter!r}")
    letter = letter.strip().lower()
    frequency, relation = _int(let_frequency, "let_frequency", where), _relation(let_relation, where)
    # Counter(text.lower())[letter]: a blank "letter" counts nothing
    return lambda text: _compare(text.lower().count(letter) if letter else 0, frequency, relation)


# --- language and case ------------------------------------------------------------------------------------------


@_instruction("language:response_language")
def _response_language(*, language: str, lang_failure_passes: bool = True) -> Check:
    def check(text: str) -> bool:
        detected = T.detect_language(text)
        return lang_failure_passes if detected is None else detected == language

    return check


@_instruction("change_case:english_capital")
def _english_capital(*, lang_failure_passes: bool = True) -> Check:
    def check(text: str) -> bool:
        if not text.isupper():
            return False
        detected = T.detect_language(text)
        return lang_failure_passes if detected is None else detected == "en"

    return check


@_instruction("change_case:english_lowercase")
def _english_lowercase(*, lang_failure_passes: bool = True) -> Check:
    def check(text: str) -> bool:
        if not text.islower():
            return False
        detected = T.detect_language(text)
        return lang_failure_passes if detected is None else detected == "en"

    return check


_LANGUAGE_BUILDERS = {_response_language, _english_capital, _english_lowercase}


@_instruction("change_case:capital_word_frequency")
def _capital_word_frequency(*, capital_frequency: int, capital_relation: str) -> Check:
    where = "change_case:capital_word_frequency"
    frequency, relation = _int(capital_frequency, "capital_frequency", where), _relation(capital_relation, where)
    return lambda text: _compare(sum(1 for w in T.word_tokenize(text) if w.isupper()), frequency, relation)


# --- length constraints -----------------------------------------------------------------------------------------


@_instruction("length_constraints:number_sentences")
def _number_sentences(*, num_sentences: int, relation: str) -> Check:
    where = "length_constraints:number_sentences"
    threshold, relation = _int(num_sentences, "num_sentences", where), _relation(relation, where)
    return lambda text: _compare(T.count_sentences(text), threshold, relation)


@_instruction("length_constraints:number_words")
def _number_words(*, num_words: int, relation: str) -> Check:
    where = "length_constraints:number_words"
    threshold, relation = _int(num_words, "num_words", where), _relation(relation, where)
    return lambda text: _compare(T.count_words(text), threshold, relation)


_DIVIDER_RE = re.compile(r"\s?\*\*\*\s?")


@_instruction("length_constraints:number_paragraphs")
def _number_paragraphs(*, num_paragraphs: int) -> Check:
    expected = _int(num_paragraphs, "num_paragraphs", "length_constraints:number_paragraphs")

    def check(text: str) -> bool:
        parts = _DIVIDER_RE.split(text)
        count = len(parts)
        for i, part in enumerate(parts):
            if not part.strip():
                if i in (0, len(parts) - 1):
                    count -= 1
                else:
                    return False  # an empty paragraph between two dividers
        return count == expected

    return check


_FIRST_WORD_PUNCT = frozenset(".,?!'\"")


@_instruction("length_constraints:nth_paragraph_first_word")
def _nth_paragraph_first_word(*, num_paragraphs: int, nth_paragraph: int, first_word: str) -> Check:
    where = "length_constraints:nth_paragraph_first_word"
    expected, nth = _int(num_paragraphs, "num_paragraphs", where), _int(nth_paragraph, "nth_paragraph", where)
    if not 1 <= nth <= expected or nth != int(nth):
        raise ValueError(f"{where}: nth_paragraph must be a whole number in 1..num_paragraphs, got {nth} of {expected}")
    nth = int(nth)
    target = first_word.lower()

    def check(text: str) -> bool:
        paragraphs = text.split("\n\n")
        count = sum(1 for p in paragraphs if p.strip())
        if nth > count:
            return False
        paragraph = paragraphs[nth - 1].strip()  # indexes the raw split, empty paragraphs included
        if not paragraph:
            return False
        word = paragraph.split()[0].strip().lstrip("'").lstrip('"')
        first = []
        for ch in word:
            if ch in _FIRST_WORD_PUNCT:
                break
            first.append(ch.lower())
        return count == expected and "".join(first) == target

    return check


# --- detectable content -----------------------------------------------------------------------------------------


def count_placeholders(text: str) -> int:
    """Number of non-overlapping `re.findall(r"\\[.*?\\]", text)` matches, in linear time."""
    count, pos, n = 0, 0, len(text)
    while True:
        start = text.find("[", pos)
        if start < 0:
            return count
        close = text.find("]", start + 1)
        newline = text.find("\n", start + 1)
        if close >= 0 and (newline < 0 or close < newline):
            count += 1
            pos = close + 1
        elif newline < 0:
            return count  # no "]" on this last line: no later "[" can close either
        else:
            pos = newline + 1  # every "[" before this newline fails the same way
        if pos >= n:
            return count


@_instruction("detectable_content:number_placeholders")
def _number_placeholders(*, num_placeholders: int) -> Check:
    minimum = _int(num_placeholders, "num_placeholders", "detectable_content:number_placeholders")
    return lambda text: count_placeholders(text) >= minimum


@_instruction("detectable_content:postscript")
def _postscript(*, postscript_marker: str) -> Check:
    marker = postscript_marker.strip()
    # The reference searches r"\s*" + X + r".*$" (MULTILINE): a match exists exactly where X matches, since
    # the leading \s* may be empty and ".*$" always completes the line. Searching X alone avoids the
    # quadratic scan of \s* over long whitespace runs.
    if marker == "P.P.S":
        pattern = re.compile(r"p\.\s?p\.\s?s", re.MULTILINE)
    elif marker == "P.S.":
        pattern = re.compile(r"p\.\s?s\.", re.MULTILINE)
    else:
        pattern = re.compile(r"(?:" + marker.lower() + r")", re.MULTILINE)
    return lambda text: pattern.search(text.lower()) is not None


# --- detectable format ------------------------------------------------------------------------------------------


_NON_SPACE_RE = re.compile(r"\S")


def count_bullets(text: str) -> int:
    """`len(re.findall(r"^\\s*\\*[^\\*].*$", t, re.M)) + len(re.findall(r"^\\s*-.*$", t, re.M))` in linear time."""
    return _count_line_items(text, star=True) + _count_line_items(text, star=False)


def _count_line_items(text: str, *, star: bool) -> int:
    # A match starts at a line start, skips whitespace (newlines included) to the first non-space character q,
    # which must be "*" followed by a non-"*" character (which may itself be a newline) -- or "-"; it then runs
    # to the end of that line. Line starts inside the same whitespace run reach the same q, so q is memoised.
    n = len(text)
    count, start, last_q = 0, 0, -1
    while start <= n:
        if start <= last_q:
            q = last_q
        else:
            m = _NON_SPACE_RE.search(text, start)
            q = m.start() if m else n
            last_q = q
        matched = False
        if q < n:
            if star:
                matched = text[q] == "*" and q + 1 < n and text[q + 1] != "*"
                body = q + 2
            else:
                matched = text[q] == "-"
                body = q + 1
        if matched:
            count += 1
            end = text.find("\n", body)
            if end < 0:
                return count
            start = end + 1
        else:
            nl = text.find("\n", start)
            if nl < 0:
                return count
            start = nl + 1
    return count


@_instruction("detectable_format:number_bullet_lists")
def _number_bullet_lists(*, num_bullets: int) -> Check:
    expected = _int(num_bullets, "num_bullets", "detectable_format:number_bullet_lists")
    return lambda text: count_bullets(text) == expected


CONSTRAINED_RESPONSES = ("My answer is yes.", "My answer is no.", "My answer is maybe.")


@_instruction("detectable_format:constrained_response")
def _constrained_response() -> Check:
    return lambda text: any(option in text.strip() for option in CONSTRAINED_RESPONSES)


_HIGHLIGHT_RE = re.compile(r"\*[^\n\*]*\*")
_DOUBLE_HIGHLIGHT_RE = re.compile(r"\*\*[^\n\*]*\*\*")


def count_highlights(text: str) -> int:
    """Google's count: non-empty `*x*` spans plus non-empty `**x**` spans (a bold span counts in both)."""
    single = sum(1 for h in _HIGHLIGHT_RE.findall(text) if h.strip("*").strip())
    double = sum(1 for h in _DOUBLE_HIGHLIGHT_RE.findall(text) if h[2:-2].strip())
    return single + double


@_instruction("detectable_format:number_highlighted_sections")
def _number_highlighted_sections(*, num_highlights: int) -> Check:
    minimum = _int(num_highlights, "num_highlights", "detectable_format:number_highlighted_sections")
    return lambda text: count_highlights(text) >= minimum


@_instruction("detectable_format:multiple_sections")
def _multiple_sections(*, section_spliter: str, num_sections: int) -> Check:
    minimum = _int(num_sections, "num_sections", "detectable_format:multiple_sections")
    pattern = re.compile(r"\s?" + section_spliter.strip() + r"\s?\d+\s?")
    return lambda text: len(pattern.split(text)) - 1 >= minimum


def _json_text(text: str) -> str:
    text = text.strip()
    for prefix in ("```json", "```Json", "```JSON", "```"):  # applied one after another, as the reference does
        text = text.removeprefix(prefix)
    return text.removesuffix("```").strip()


@_instruction("detectable_format:json_format")
def _json_format() -> Check:
    def check(text: str) -> bool:
        try:
            json.loads(_json_text(text))
        except (ValueError, RecursionError):
            return False
        return True

    return check


def has_title(text: str) -> bool:
    """Google's title check (`<<[^\\n]+>>` with non-blank content) in linear time: per line, the greedy match runs
    from the first "<<" to the last ">>" at least one character later; no other start can match on that line."""
    if "<<" not in text:
        return False
    for line in text.split("\n"):
        i = line.find("<<")
        if i < 0:
            continue
        j = line.rfind(">>")
        if j >= i + 3 and line[i:j + 2].lstrip("<").rstrip(">").strip():
            return True
    return False


@_instruction("detectable_format:title")
def _title() -> Check:
    return has_title


# --- combination, start/end, punctuation -----------------------------------------------------------------------


@_instruction("combination:two_responses")
def _two_responses() -> Check:
    def check(text: str) -> bool:
        parts = text.split("******")
        valid = []
        for i, part in enumerate(parts):
            if part.strip():
                valid.append(part)
            elif i not in (0, len(parts) - 1):
                return False
        return len(valid) == 2 and valid[0].strip() != valid[1].strip()

    return check


@_instruction("combination:repeat_prompt")
def _repeat_prompt(*, prompt_to_repeat: str) -> Check:
    if not prompt_to_repeat:
        raise ValueError("combination:repeat_prompt: prompt_to_repeat must be set")
    target = prompt_to_repeat.strip().lower()
    return lambda text: text.strip().lower().startswith(target)


@_instruction("startend:end_checker")
def _end_checker(*, end_phrase: str) -> Check:
    target = end_phrase.strip().lower()
    return lambda text: text.strip().strip('"').lower().endswith(target)


@_instruction("startend:quotation")
def _quotation() -> Check:
    def check(text: str) -> bool:
        text = text.strip()
        return len(text) > 1 and text[0] == '"' and text[-1] == '"'

    return check


@_instruction("punctuation:no_comma")
def _no_comma() -> Check:
    return lambda text: "," not in text
