"""verl's default scorers, reimplemented verdict for verdict, for the verl adapter's `semantics="verl"` mode.

Registered as verifiers (usable anywhere a verifier name is, e.g. `rlvr verify --verifier verl_gsm8k`):
- `verl_gsm8k` — verl `reward_score/gsm8k.py` (data source `openai/gsm8k`), strict method: only the last 300
  characters are searched; the answer is the LAST `#### <digits, '.', ','>` match with commas removed; the score
  is 1.0 when that string equals the ground truth string exactly, else 0.0. So `#### 72.0`, `The answer is 72`,
  `#### 72` followed by 300+ more characters, and an int ground truth all score 0.
- `verl_math_dapo` — verl `reward_score/math_dapo.py` (data sources `math_dapo`, `math`, `math_dapo_reasoning`,
  `aime*`): the last 300 characters; the answer is the text after the LAST `Answer:` (case-insensitive, to the end
  of the line), normalised the Minerva way (below), as is the ground truth; +1.0 when equal, else **-1.0**. With no
  `Answer:`, the last `\\boxed{...}` of the last 100 characters is compared with the ground truth as raw strings
  (verl 0.9.1's fallback); with neither, -1.0.
- `verl_math` — verl `reward_score/math_reward.py` (data sources `lighteval/MATH`,
  `DigitalLearningGmbH/MATH-lighteval`, `HuggingFaceH4/MATH-500`): the last `\\boxed{...}` (or `\\boxed ...` up to
  `$`) of the whole response, compared with the ground truth after the Hendrycks MATH string normalisation;
  1.0 or 0.0. An answer only in `\\fbox{}` scores 0 (verl's unboxing rejects it).

Reference: verl 0.9.1 (PyPI), `verl/utils/reward_score/{gsm8k,math_dapo,math_reward}.py` and the data source
dispatch in its `default_compute_score`. This module is our own code written from those files' semantics; the tables of
strings below are the semantics (what is removed or substituted), so they match verl's item for item. The only
intended difference: responses longer than `rewards.base.MAX_RESPONSE_CHARS` keep their tail before
`verl_math` reads them (verl reads all of it), so every call stays bounded.
"""

from __future__ import annotations

import re
from typing import Any

from rewards.base import MAX_RESPONSE_CHARS, Score
from rewards.registry import register

_TAIL = 300  # verl's gsm8k and math_dapo read only the last 300 characters
_BOX_TAIL = 100  # math_dapo's boxed fallback: the last 100 of those

# ---- openai/gsm8k ---------------------------------------------------------------------------------------------
_GSM8K_STRICT = re.compile(r"#### (\-?[0-9\.\,]+)")


@register("verl_gsm8k")
def verl_gsm8k(response: str, ground_truth: Any, *, prompt: str | None = None) -> Score:
    """verl's `gsm8k.compute_score(solution_str, ground_truth)` with its defaults (strict, 0.0 / 1.0)."""
    found = _GSM8K_STRICT.findall(response[-_TAIL:])
    if not found:
        return Score(0.0, "no '#### N' in the last 300 characters (verl strict)")
    answer = found[-1].replace(",", "").replace("$", "")
    if answer == ground_truth:
        return Score(1.0, "correct (verl strict)")
    return Score(0.0, f"wrong: got {answer!r}, expected {ground_truth!r} (verl strict, exact string)")


# ---- math_dapo: Minerva normalisation, +1 / -1 ----------------------------------------------------------------
_DAPO_ANSWER = re.compile(r"(?i)Answer\s*:\s*([^\n]+)")
# (old, new) replacements, then strings deleted, in this order
_MINERVA_REPLACE = (("an ", ""), ("a ", ""), (".$", "$"), ("\\$", ""), ("\\ ", ""), (" ", ""), ("mbox", "text"),
                    (",\\text{and}", ","), ("\\text{and}", ","), ("\\text{m}", "\\text{}"))
_MINERVA_DELETE = ("square", "ways", "integers", "dollars", "mph", "inches", "hours", "km", "units", "\\ldots", "sue",
                   "points", "feet", "minutes", "digits", "cents", "degrees", "cm", "gm", "pounds", "meters", "meals",
                   "edges", "students", "childrentickets", "multiples", "\\text{s}", "\\text{.}", "\\text{\ns}",
                   "\\text{}^2", "\\text{}^3", "\\text{\n}", "\\text{}", "\\mathrm{th}", "^\\circ", "^{\\circ}",
                   "\\;", ",\\!", "{,}", '"', "\\dots")
_MINERVA_PATTERNS = (
    (re.compile(r"(.*?)(\$)(.*?)(\$)(.*)"), "$\\3$"),  # keep only the first $...$ span
    (re.compile(r"(\\text\{)(.*?)(\})"), "\\2"),
    (re.compile(r"(\\textbf\{)(.*?)(\})"), "\\2"),
    (re.compile(r"(\\overline\{)(.*?)(\})"), "\\2"),
    (re.compile(r"(\\boxed\{)(.*)(\})"), "\\2"),
    (re.compile(r"(frac)([^{])(.)"), "frac{\\2}{\\3}"),  # \fracab -> \frac{a}{b}
    (re.compile(r"(sqrt)([^{])"), "sqrt{\\2}"),  # \sqrta -> \sqrt{a}
)


def minerva_normalise(answer: str) -> str:
    """The Minerva final-answer normalisation verl's math_dapo applies to both sides."""
    answer = answer.split("=")[-1]
    for old, new in _MINERVA_REPLACE:
        answer = answer.replace(old, new)
    for gone in _MINERVA_DELETE:
        answer = answer.replace(gone, "")
    for pattern, repl in _MINERVA_PATTERNS:
        answer = pattern.sub(repl, answer)
    answer = answer.replace("$", "")
    if answer.replace(",", "").isdigit():
        answer = answer.replace(",", "")
    return answer.strip()


@register("verl_math_dapo")
def verl_math_dapo(response: str, ground_truth: Any, *, prompt: str | None = None) -> Score:
    """verl's `math_dapo.compute_score(solution_str, ground_truth)`: +1.0 correct, -1.0 otherwise."""
    if not isinstance(ground_truth, str):  # verl's normalisation fails on it too
        raise ValueError(f"math_dapo ground truth must be a string, got {ground_truth!r}")
    tail = response[-_TAIL:]
    found = _DAPO_ANSWER.findall(tail)
    pred = minerva_normalise(found[-1] if found else "[INVALID]")
    if pred == "[INVALID]":  # no "Answer:": verl 0.9.1 falls back to the last \boxed{} of the last 100 chars
        boxed = _last_boxed_brace(tail[-_BOX_TAIL:])
        if boxed is not None:
            content = boxed[len("\\boxed{"):-1]
            if content == ground_truth:  # raw strings: no normalisation on this path
                return Score(1.0, "correct (verl math_dapo, boxed)")
            return Score(-1.0, f"wrong: got {content[:40]!r}, expected {ground_truth[:40]!r} (verl math_dapo, boxed)")
    gold = minerva_normalise(ground_truth)
    if pred == gold:
        return Score(1.0, "correct (verl math_dapo)")
    return Score(-1.0, f"wrong: got {pred[:40]!r}, expected {gold[:40]!r} (verl math_dapo)")


verl_math_dapo.value_range = (-1.0, 1.0)  # rewards.scoring.value_range: verl's +-1, not [0, 1]


def _last_boxed_brace(text: str) -> str | None:
    """math_dapo's own `\\boxed{...}` finder: the last `\\boxed{` with its balanced braces, else None."""
    start = text.rfind("\\boxed{")
    return None if start < 0 else _through_balanced_braces(text, start)


def _through_balanced_braces(text: str, start: int) -> str | None:
    """text[start:] up to the `}` that closes the first `{` after `start` (braces balanced), or None."""
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[start:i + 1]
    return None


# ---- lighteval/MATH: last \boxed, Hendrycks normalisation ------------------------------------------------------
def last_boxed(text: str) -> str | None:
    """The last `\\boxed{...}` (braces balanced) or `\\fbox{...}` with its command, or `\\boxed ` + the text after
    the last `\\boxed ` up to a `$` (that form wins whenever it occurs), or None."""
    if "\\boxed " in text:
        return "\\boxed " + text.split("\\boxed ")[-1].split("$")[0]
    start = text.rfind("\\boxed")
    if start < 0:
        start = text.rfind("\\fbox")
        if start < 0:
            return None
    return _through_balanced_braces(text, start)


def unbox(boxed: str) -> str | None:
    """The content of `\\boxed ...` or `\\boxed{...}`; None for anything else (verl's assertion fails: score 0)."""
    if "\\boxed " in boxed:
        return boxed[len("\\boxed "):] if boxed.startswith("\\boxed ") else None
    if boxed.startswith("\\boxed{") and boxed.endswith("}"):
        return boxed[len("\\boxed{"):-1]
    return None


class _Unnormalisable(Exception):
    """Where verl's normalisation raises; it then compares the raw strings."""


def _fix_fracs(s: str) -> str:
    parts = s.split("\\frac")
    out = parts[0]
    for part in parts[1:]:
        out += "\\frac"
        if not part:
            raise _Unnormalisable  # verl indexes part[0] of an empty piece
        if part[0] == "{":
            out += part
        elif len(part) < 2:
            return s
        elif part[1] != "{":
            out += "{" + part[0] + "}{" + part[1] + "}" + part[2:]
        else:
            out += "{" + part[0] + "}" + part[1:]
    return out


def _fix_slash(s: str) -> str:
    pieces = s.split("/")
    if len(pieces) != 2:
        return s
    try:
        a, b = int(pieces[0]), int(pieces[1])
    except ValueError:
        return s
    return f"\\frac{{{a}}}{{{b}}}" if s == f"{a}/{b}" else s


def _fix_sqrt(s: str) -> str:
    if "\\sqrt" not in s:
        return s
    parts = s.split("\\sqrt")
    out = parts[0]
    for part in parts[1:]:
        if not part:
            raise _Unnormalisable  # verl indexes part[0] of an empty piece
        out += "\\sqrt" + (part if part[0] == "{" else "{" + part[0] + "}" + part[1:])
    return out


def hendrycks_normalise(s: str) -> str:
    """The MATH string normalisation verl's math_reward applies (raises _Unnormalisable where verl's raises)."""
    for old, new in (("\n", ""), ("\\!", ""), ("\\\\", "\\"), ("tfrac", "frac"), ("dfrac", "frac"), ("\\left", ""),
                     ("\\right", ""), ("^{\\circ}", ""), ("^\\circ", ""), ("\\$", "")):
        s = s.replace(old, new)
    if "\\text{ " in s:  # units on the right
        pieces = s.split("\\text{ ")
        if len(pieces) != 2:
            raise _Unnormalisable
        s = pieces[0]
    s = s.replace("\\\\%", "").replace("\\%", "").replace(" .", " 0.").replace("{.", "{0.")
    if not s:
        return s
    if s[0] == ".":
        s = "0" + s
    sides = s.split("=")
    if len(sides) == 2 and len(sides[0]) <= 2:  # "k = 3" -> "3"
        s = sides[1]
    s = _fix_sqrt(s).replace(" ", "")
    s = _fix_fracs(s)
    if s == "0.5":
        s = "\\frac{1}{2}"
    return _fix_slash(s)


def hendrycks_equal(a: str, b: str) -> bool:
    try:
        return hendrycks_normalise(a) == hendrycks_normalise(b)
    except _Unnormalisable:
        return a == b


@register("verl_math")
def verl_math(response: str, ground_truth: Any, *, prompt: str | None = None) -> Score:
    """verl's `math_reward.compute_score(solution_str, ground_truth)`: 1.0 or 0.0."""
    boxed = last_boxed(response[-MAX_RESPONSE_CHARS:])
    if boxed is None:
        return Score(0.0, "no \\boxed answer (verl math)")
    answer = unbox(boxed)
    if answer is None:
        return Score(0.0, "answer not in \\boxed{} (verl math)")
    if not isinstance(ground_truth, str):
        return Score(0.0, f"ground truth is not a string: {ground_truth!r} (verl math)")
    if hendrycks_equal(answer, ground_truth):
        return Score(1.0, "correct (verl math)")
    return Score(0.0, f"wrong: got {answer[:40]!r}, expected {ground_truth[:40]!r} (verl math)")
