"""MATH checker: equivalences, the pinned math-verify false positives, the issue-#65 hang, adversarial input."""

from __future__ import annotations

import pytest

from rewards import math as math_checker
from rewards.math import verify_math
from rewards.registry import get_verifier

HANG_65 = "\\boxed{\\dfrac{5^{(5^{(5^{(5^5)})}-4)}-5}{16}}"  # math-verify issue #65: never returns


@pytest.fixture(scope="module", autouse=True)
def small_pool():
    pool = math_checker.configure(timeout_s=3.0, num_workers=1)
    yield pool
    pool.close()


@pytest.mark.parametrize("response, gold", [
    ("The answer is $\\boxed{\\frac{1}{2}}$.", "0.5"),
    ("\\boxed{2x-8}", "2x-8"),
    ("so $\\boxed{[2,5)}$", "[2,5)"),
    ("\\boxed{1110_4}", "1110_4"),
    ("Thus \\boxed{1-\\frac{1}{e}}", "1-1/e"),
    ("\\boxed{\\frac{1}{2^{99}}}", "\\frac{1}{2^{99}}"),
    ("\\boxed{\\sqrt{8}}", "2\\sqrt{2}"),
    ("\\boxed{72\\%}", "72"),  # math-verify's deliberate percent leniency is kept
])
def test_equivalent_answers_score_1(response, gold):
    score = verify_math(response, gold)
    assert score.value == 1.0, score.reason


@pytest.mark.parametrize("response, gold", [
    ("\\boxed{1111_4}", "1110_4"),
    ("\\boxed{2x+8}", "2x-8"),
    ("\\boxed{[2,5]}", "[2,5)"),
    ("I cannot solve this.", "3"),
])
def test_wrong_answers_score_0(response, gold):
    assert verify_math(response, gold).value == 0.0


# Known math-verify 0.9 false positives (../shared/ENVIRONMENT.md), fixed by us: pinned so they stay fixed.
@pytest.mark.parametrize("response, gold", [
    ("\\boxed{\\frac{1}{2^{98}}}", "\\frac{1}{2^{99}}"),  # numbers compared after 6-decimal rounding: cross-check
    ("1/2^98", "1/2^99"),
    ("1+1/e", "1-1/e"),  # plain-text gold read as "1": we wrap the gold in $...$
    ("\\boxed{1+\\frac{1}{e}}", "1-1/e"),
])
def test_known_false_positives_are_fixed(response, gold):
    score = verify_math(response, gold)
    assert score.value == 0.0, score.reason


def test_issue_65_hang_scores_0_within_limit_and_pool_recovers(small_pool):
    before = small_pool.stats()
    score = verify_math(HANG_65, "3")
    assert score.value == 0.0 and "timeout" in score.reason
    assert small_pool.stats()["timeouts"] == before["timeouts"] + 1
    assert small_pool.stats()["workers"] == 1
    assert verify_math("\\boxed{4}", "4").value == 1.0  # the replacement worker serves the next check


@pytest.mark.parametrize("response", [
    "7" * 10_000_000,  # 10 MB
    "{" * 200_000 + "\\boxed{" * 50_000,  # deeply nested braces
    "\\boxed{" + "\\frac{" * 5_000 + "1",
    "__import__('os').system('touch /tmp/rlvr_math_pwned')",
    "\\boxed{__import__('os').system('touch /tmp/rlvr_math_pwned')}",
])
def test_adversarial_responses_score_0(response, tmp_path):
    score = verify_math(response, "3")
    assert score.value == 0.0


def test_model_output_is_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    payloads = [f"__import__('os').system('touch {marker}')", f"\\boxed{{__import__('os').system('touch {marker}')}}",
                f"$eval(\"open('{marker}','w')\")$", f"exec(\"open('{marker}','w')\")"]
    for p in payloads:
        verify_math(p, "0")
    assert not marker.exists()


def test_bad_ground_truth_is_a_data_error():
    with pytest.raises(ValueError, match="ground truth"):
        verify_math("\\boxed{1}", "")


def test_registered_names():
    assert get_verifier("MATH") is verify_math  # the Tulu 3 RLVR rows say "MATH"
    assert get_verifier("math_500") is verify_math
