"""GSM8K checker: every extraction rule, its order, each normalisation, ground-truth formats, adversarial input."""

from __future__ import annotations

from fractions import Fraction

import pytest

from rewards.gsm8k import extract_answer, parse_ground_truth, verify_gsm8k
from rewards.registry import get_verifier


@pytest.mark.parametrize("response, value, rule", [
    ("She makes 9 * 2 = $18.\n#### 18", 18, "####"),
    ("so the total is \\boxed{42}.", 42, "boxed"),
    ("The answer is 7 apples.", 7, "answer is"),
    ("Therefore, the final answer is: 12", 12, "answer is"),
    ("Final Answer: 30 minutes", 30, "final answer:"),
    ("She has 3 apples and then 5 pears", 5, "last number"),
    ("no digits here", None, "none"),
])
def test_each_rule(response, value, rule):
    got, used = extract_answer(response)
    assert used == rule
    assert got == (None if value is None else Fraction(value))


@pytest.mark.parametrize("response, value, rule", [
    ("The answer is 5. \\boxed{6} #### 7", 7, "####"),  # #### beats everything
    ("The answer is 5. Final Answer: 9. \\boxed{6}", 6, "boxed"),  # boxed beats the phrases
    ("Final Answer: 9. So the answer is 5. Then 100 more", 5, "answer is"),  # "answer is" beats "final answer:"
    ("#### 3 ... wait, recompute #### 4", 4, "####"),  # last marker wins
    ("\\boxed{1} no, \\boxed{2}", 2, "boxed"),
    ("#### none" + " ." * 150 + " so 11", 11, "last number"),  # no number within 200 chars: fall through
])
def test_rule_order_and_last_occurrence(response, value, rule):
    assert extract_answer(response) == (Fraction(value), rule)


@pytest.mark.parametrize("text, value", [
    ("#### 1,234,567", 1234567),
    ("#### $1,234", 1234),
    ("#### \\$18", 18),
    ("#### €5 and", 5),
    ("#### 18.00", 18),
    ("#### 18.0 dollars", 18),
    ("#### 72%", 72),
    ("#### 30kg", 30),
    ("#### -5", -5),
    ("#### −5", -5),
    ("#### 0.5", Fraction(1, 2)),
    ("#### 3/4", Fraction(3, 4)),
    ("\\boxed{\\frac{3}{4}}", Fraction(3, 4)),
    ("\\boxed{\\dfrac{10}{4}}", Fraction(5, 2)),
    ("\\boxed{18{,}000}", 18000),
    ("\\boxed{18\\,000}", 18000),
    ("\\boxed{x = 12}", 12),
    ("\\boxed{\\$18 \\text{ dollars}}", 18),
    ("result 5-3 = 2", 2),  # a hyphen between numbers is not a sign
])
def test_normalisation(text, value):
    assert extract_answer(text)[0] == Fraction(value)


def test_exact_comparison_not_floats():
    assert verify_gsm8k("#### 0.1", "1/10").value == 1.0
    assert verify_gsm8k("#### 0.30000000000000004", "0.3").value == 0.0
    assert verify_gsm8k("#### 100000000000000001", "100000000000000000").value == 0.0  # equal as floats


@pytest.mark.parametrize("gt, value", [
    ("18", 18), ("1,234", 1234), ("-3", -3), (" 0.5 ", Fraction(1, 2)), (18, 18), (2.5, Fraction(5, 2)),
    ("Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.\n#### 18", 18),
])
def test_ground_truth_formats(gt, value):
    assert parse_ground_truth(gt) == value


@pytest.mark.parametrize("gt", ["", "eighteen", "18 or 19", None, True, ["18"]])
def test_bad_ground_truth_raises(gt):
    with pytest.raises(ValueError, match="ground truth"):
        verify_gsm8k("#### 18", gt)


def test_verdicts_and_reasons():
    good = verify_gsm8k("so the answer is $18.", "#### 18")
    assert good.value == 1.0 and "answer is" in good.reason
    bad = verify_gsm8k("#### 17", "18")
    assert bad.value == 0.0 and "got 17" in bad.reason and "expected 18" in bad.reason
    assert verify_gsm8k("I don't know", "18").reason == "no number found"


def test_registered_names_case_insensitive():
    assert get_verifier("GSM8K") is verify_gsm8k
    assert get_verifier("gsm8k_test") is verify_gsm8k


def test_non_string_response_is_an_error():
    with pytest.raises(TypeError):
        verify_gsm8k(18, "18")


# --- adversarial: each returns (bounded work: no regex backtracking, capped length) and scores 0 ---------------
@pytest.mark.parametrize("response", [
    "9" * 10_000_000,  # 10 MB, one giant "number"
    "1," * 5_000_000,  # 10 MB of comma-separated digits
    "{" * 1_000_000 + "\\boxed{" * 100_000,  # deeply nested braces
    "\\boxed{" + "{" * 500_000 + "17",
    "__import__('os').system('touch /tmp/rlvr_pwned') #### __import__('os')",
    "-" * 1_000_000 + "." * 1_000_000,
    "answer is " * 1_000_000,
])
def test_adversarial_responses(response):
    assert verify_gsm8k(response, "18").value == 0.0


def test_long_response_keeps_its_tail():
    assert verify_gsm8k("x" * 5_000_000 + " #### 18", "18").value == 1.0
