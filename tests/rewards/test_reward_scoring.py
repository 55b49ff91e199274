"""score_batch: multi-verifier rows, weights, and RELIABILITY.md items 4-5 (hung and faulty verifiers)."""

from __future__ import annotations

import faulty_verifiers  # noqa: F401 - registers the test_* verifiers
import pytest

from rewards.registry import UnknownVerifierError
from rewards.scoring import (
    RewardErrorBudgetExceeded,
    check_error_budget,
    merge_batches,
    resolve_verifiers,
    score_batch,
)

HANG_65 = "\\boxed{\\dfrac{5^{(5^{(5^{(5^5)})}-4)}-5}{16}}"


def test_mixed_batch_by_dataset(scoring_pool):
    batch = score_batch(["#### 18", "#### 17", "\\boxed{\\frac12}", "\\boxed{2}"],
                        ["18", "18", "0.5", "3"], ["gsm8k", "GSM8K", "math", "MATH"], pool=scoring_pool)
    assert batch.values == [1.0, 0.0, 1.0, 0.0]
    assert batch.per_verifier["gsm8k"].count == 2 and batch.per_verifier["gsm8k"].mean == 0.5
    assert batch.per_verifier["math"].mean == 0.5
    assert batch.errors == 0 and batch.timeouts == 0
    m = batch.metrics()
    assert m["reward/gsm8k/mean"] == 0.5 and m["reward/math/count"] == 2.0 and m["reward/errors"] == 0.0


def test_row_with_several_verifiers_and_weights(scoring_pool):
    batch = score_batch(["#### 18"], [["18", "18"]], [["gsm8k", "test_half"]], weights={"test_half": 2.0},
                        pool=scoring_pool)
    assert batch.values == [1.0 + 2.0 * 0.5]
    assert "gsm8k: correct" in batch.scores[0].reason
    assert set(batch.per_verifier) == {"gsm8k", "test_half"}


def test_prompt_is_passed_through(scoring_pool):
    batch = score_batch(["r", "r"], ["p1", "p1"], ["test_echo_prompt"] * 2, prompts=["p1", "other"],
                        pool=scoring_pool)
    assert batch.values == [1.0, 0.0]


@pytest.mark.parametrize("name, needle", [
    ("test_raises", "RuntimeError: verifier bug"),
    ("test_nan", "non-finite"),
    ("test_wrong_type", "expected Score or a number"),
    ("test_crashes", "worker crashed"),
])
def test_faulty_verifier_scores_0_and_counts_an_error(scoring_pool, name, needle):
    batch = score_batch(["#### 18", "x"], ["18", "y"], ["gsm8k", name], pool=scoring_pool)
    assert batch.values == [1.0, 0.0]
    assert batch.errors == 1 and batch.timeouts == 0
    assert batch.per_verifier[name].errors == 1
    assert needle in batch.scores[1].reason
    assert batch.failures[0][:2] == (1, name)
    assert batch.metrics()["reward/errors"] == 1.0


def test_hung_verifiers_time_out_and_pool_recovers(scoring_pool):
    before = scoring_pool.stats()
    batch = score_batch(["x", HANG_65, "#### 18"], ["y", "3", "18"], ["test_hangs", "math", "gsm8k"],
                        pool=scoring_pool)
    assert batch.values == [0.0, 0.0, 1.0]
    assert batch.timeouts == 2 and batch.errors == 0
    assert batch.metrics()["reward/timeouts"] == 2.0
    assert batch.per_verifier["math"].timeouts == 1
    assert "timeout" in batch.scores[1].reason
    after = scoring_pool.stats()
    assert after["timeouts"] == before["timeouts"] + 2 and after["workers"] == 2
    again = score_batch(["#### 1", "\\boxed{2}"], ["1", "2"], ["gsm8k", "math"], pool=scoring_pool)
    assert again.values == [1.0, 1.0]


def test_timeout_override(scoring_pool):
    batch = score_batch(["x"], ["y"], ["test_hangs"], pool=scoring_pool, timeout_s=0.5)
    assert batch.timeouts == 1 and "after 0.5 s" in batch.scores[0].reason


def test_malformed_multi_verifier_row_is_an_error(scoring_pool):
    batch = score_batch(["#### 18", "#### 18"], ["18", "18"], [["gsm8k", "math"], "gsm8k"], pool=scoring_pool)
    assert batch.values == [0.0, 1.0]
    assert batch.errors == 1 and "not a list" in batch.scores[0].reason


def test_bad_ground_truth_is_an_error_not_a_crash(scoring_pool):
    batch = score_batch(["#### 18"], ["eighteen"], ["gsm8k"], pool=scoring_pool)
    assert batch.values == [0.0] and batch.errors == 1 and "ValueError" in batch.scores[0].reason


def test_unknown_verifier_fails_before_scoring(scoring_pool):
    with pytest.raises(UnknownVerifierError, match="known: .*gsm8k"):
        score_batch(["x"], ["y"], ["no_such_verifier"], pool=scoring_pool)
    with pytest.raises(UnknownVerifierError):
        resolve_verifiers(["gsm8k", ["math", "nope"]])


def test_length_mismatch_is_a_caller_error(scoring_pool):
    with pytest.raises(ValueError, match="2 responses but 1 ground truths"):
        score_batch(["a", "b"], ["1"], ["gsm8k", "gsm8k"], pool=scoring_pool)


def test_error_budget(scoring_pool):
    batch = score_batch(["x"] * 4, ["1"] * 4, ["test_raises", "gsm8k", "gsm8k", "gsm8k"], pool=scoring_pool)
    assert batch.failed_fraction == 0.25
    check_error_budget(batch, max_error_fraction=0.25)
    with pytest.raises(RewardErrorBudgetExceeded, match="25.0% of 4 samples.*sample 0 \\(test_raises\\)"):
        check_error_budget(batch, max_error_fraction=0.1)


def test_merge_batches(scoring_pool):
    a = score_batch(["#### 1", "x"], ["1", "1"], ["gsm8k", "test_raises"], pool=scoring_pool)
    b = score_batch(["#### 2"], ["3"], ["gsm8k"], pool=scoring_pool)
    m = merge_batches([a, b])
    assert m.values == [1.0, 0.0, 0.0] and m.errors == 1 and m.failures[0][0] == 1
    assert m.per_verifier["gsm8k"].count == 2 and m.per_verifier["gsm8k"].mean == 0.5


def test_called_from_many_threads(scoring_pool):
    from concurrent.futures import ThreadPoolExecutor

    def job(k):
        return score_batch([f"#### {k}"], [str(k)], ["gsm8k"], pool=scoring_pool).values[0]

    with ThreadPoolExecutor(8) as ex:
        assert list(ex.map(job, range(32))) == [1.0] * 32


def test_tulu_rlvr_sample_rows(shared_data, scoring_pool):
    """The Tulu 3 RLVR schema's gsm8k and MATH rows (dataset "gsm8k" / "MATH") score through their verifiers."""
    import json

    rows = [json.loads(line) for line in (shared_data / "rlvr_sample" / "rlvr_sample.jsonl").open()]
    rows = [r for r in rows if r["dataset"] in ("gsm8k", "MATH")]
    right = [f"So the answer is \\boxed{{{r['ground_truth']}}}." for r in rows]
    wrong = [f"So the answer is \\boxed{{1{r['ground_truth']}}}." for r in rows]
    batch = score_batch(right + wrong, [r["ground_truth"] for r in rows] * 2, [r["dataset"] for r in rows] * 2,
                        pool=scoring_pool)
    assert batch.values == [1.0] * len(rows) + [0.0] * len(rows)
    assert set(batch.metrics()) >= {"reward/math/mean", "reward/gsm8k/mean", "reward/errors", "reward/timeouts"}
