"""rewards.verl_compat: verl's default scorers' verdicts, pinned case by case, and (when a verl package is
installed, e.g. `pip install --no-deps verl`) compared with verl's own scorer files on generated cases."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import random
import re
from pathlib import Path

import pytest

from rewards.verl_compat import minerva_normalise, verl_gsm8k, verl_math, verl_math_dapo


@pytest.mark.parametrize("response, truth, want", [
    ("so #### 18", "18", 1.0),
    ("#### 1,234", "1234", 1.0),
    ("#### -3", "-3", 1.0),
    ("#### 18 then #### 19", "18", 0.0),  # the last one counts
    ("#### 18.", "18", 0.0),  # the '.' is part of the match
    ("####18", "18", 0.0),
    ("#### 18", 18, 0.0),  # string comparison
])
def test_gsm8k(response, truth, want):
    assert verl_gsm8k(response, truth).value == want


@pytest.mark.parametrize("response, truth, want", [
    ("Answer: 5", "5", 1.0),
    ("answer : 5 dollars", "5", 1.0),
    ("Answer: $\\frac{1}{2}$", "\\frac{1}{2}", 1.0),
    ("Answer: \\frac12", "\\frac{1}{2}", 1.0),
    ("Answer: 1,000", "1000", 1.0),
    ("Answer: x = 4", "4", 1.0),
    ("Answer: 4\nAnswer: 5", "4", -1.0),
    ("no answer line", "4", -1.0),
    ("\\boxed{4}", "4", 1.0),
    ("\\boxed{ 4}", "4", -1.0),  # the boxed fallback compares raw strings
])
def test_math_dapo(response, truth, want):
    assert verl_math_dapo(response, truth).value == want


def test_minerva_normalise():
    assert minerva_normalise("The total is $12$ dollars") == "12"
    assert minerva_normalise("\\text{(B)}") == "(B)"
    assert minerva_normalise("10^\\circ") == "10"


@pytest.mark.parametrize("response, truth, want", [
    ("\\boxed{\\frac{1}{2}}", "0.5", 1.0),
    ("\\boxed{1/2}", "\\frac{1}{2}", 1.0),
    ("\\boxed{\\dfrac12}", "\\frac{1}{2}", 1.0),
    ("\\boxed{10^\\circ}", "10", 1.0),
    ("\\boxed{5 \\text{ cm}}", "5", 1.0),
    ("\\boxed{k = 3}", "3", 1.0),
    ("\\fbox{3}", "3", 0.0),
    ("\\boxed 3$ and more", "3", 1.0),
    ("no box 3", "3", 0.0),
    ("\\boxed{2x}", "x*2", 0.0),
])
def test_math(response, truth, want):
    assert verl_math(response, truth).value == want


def _verl_scorers():
    spec = importlib.util.find_spec("verl")  # finds the package without importing it (its __init__ is heavy)
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("verl is not installed (pip install --no-deps verl)")
    folder = Path(list(spec.submodule_search_locations)[0]) / "utils" / "reward_score"
    out = {}
    for name in ("gsm8k", "math_dapo", "math_reward"):
        file_spec = importlib.util.spec_from_file_location(f"verl_scorer_{name}", folder / f"{name}.py")
        module = importlib.util.module_from_spec(file_spec)
        file_spec.loader.exec_module(module)  # each imports only re/typing
        out[name] = module
    return out


TOKENS = ["\\frac", "\\dfrac", "{", "}", "{", "}", "1", "2", "12", "0.5", ".5", "x", " ", " ", "\\sqrt", "\\boxed{",
          "\\boxed ", "\\fbox{", "$", "=", ".", "\\text{ ", "\\text{", "cm", "\\%", "^\\circ", "\\!", "a ", "an ", ",",
          "\n", "Answer:", "answer :", "\\left(", "\\right)", "/", "-", "\\mbox{", "\\text{and}", "\\$", "\\\\", "k=",
          "\\textbf{", "\\overline{", "\\ ", "{,}", "dollars", "sqrt2", "frac12"]


def test_same_verdicts_as_verls_own_files(shared_data):
    verl = _verl_scorers()
    rng = random.Random(0)
    cases = 0

    def rand(k):
        return "".join(rng.choice(TOKENS) for _ in range(rng.randint(0, k)))

    rows = [json.loads(line) for line in (shared_data / "gsm8k" / "test.jsonl").read_text().splitlines()[:300]]
    for row in rows:
        truth = re.search(r"#### (\-?[0-9\.\,]+)", row["answer"]).group(1).replace(",", "")
        for response in (row["answer"], row["answer"] + "x" * 300, f"#### {truth}.0", f"The answer is {truth}"):
            assert verl_gsm8k(response, truth).value == float(verl["gsm8k"].compute_score(response, truth))
            cases += 1
    for i in range(4000):
        truth, response = rand(6), rand(25)
        if i % 3 == 0:
            response += "\\boxed{" + (truth if i % 2 else rand(4)) + "}"
        if i % 5 == 0:
            response += "\nAnswer: " + (truth if i % 2 else rand(4))
        with contextlib.redirect_stdout(io.StringIO()):  # verl prints caught exceptions
            want_math = float(verl["math_reward"].compute_score(response, truth))
        want_dapo = float(verl["math_dapo"].compute_score(response, truth)["score"])
        assert verl_math(response, truth).value == want_math, (response, truth)
        assert verl_math_dapo(response, truth).value == want_dapo, (response, truth)
        cases += 2
    assert cases == 9200
