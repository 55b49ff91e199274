"""Adapters checked against the documented call contracts of OpenRLHF, verl and TRL (none of them installed)."""

from __future__ import annotations

import asyncio
import importlib.util
import json
from pathlib import Path

import faulty_verifiers  # noqa: F401 - registers test_hangs etc.
import pytest

import rewards.adapters.openrlhf as openrlhf_adapter
from rewards import scoring
from rewards.adapters.trl import make_reward_func
from rewards.adapters.verl import compute_score, compute_score_batch
from rewards.registry import UnknownVerifierError

ADAPTERS = Path(openrlhf_adapter.__file__).parent


@pytest.fixture(autouse=True)
def shared_pool(monkeypatch, scoring_pool):
    """Adapters use the module-level scoring pool; point it at the session's warmed pool."""
    monkeypatch.setattr(scoring, "_pool", scoring_pool)


def _load_like_the_trainer(path: Path, module_name: str):
    """OpenRLHF and verl both load a reward file with spec_from_file_location + exec_module."""
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- OpenRLHF: reward_func(queries, prompts, labels, **kwargs) -> {"rewards", "scores", "extra_logs"} ----------
def test_openrlhf_contract():
    torch = pytest.importorskip("torch")
    reward_func = _load_like_the_trainer(ADAPTERS / "openrlhf.py", "reward_func").reward_func
    prompts = ["Example: #### 5\nQ: 2+2?\nA:", "Q: half of one?\nA:"]
    responses = [" The answer is 4.", " \\boxed{\\frac{1}{2}}"]
    labels = [json.dumps({"dataset": "gsm8k", "ground_truth": "4"}), json.dumps({"dataset": "math", "ground_truth": "0.5"})]
    out = reward_func([p + r for p, r in zip(prompts, responses)], prompts, labels, extra_arg="ignored")
    assert set(out) == {"rewards", "scores", "extra_logs"}
    assert isinstance(out["rewards"], torch.Tensor) and out["rewards"].shape == (2,)
    # the prompt's "#### 5" is not scored: the query is stripped to the response
    assert out["rewards"].tolist() == [1.0, 1.0] and out["scores"].tolist() == [1.0, 1.0]
    assert set(out["extra_logs"]) == {"verified", "reward_error", "reward_timeout"}
    assert all(isinstance(v, torch.Tensor) and v.shape == (2,) for v in out["extra_logs"].values())


def test_openrlhf_plain_labels_use_env_dataset_and_scale(monkeypatch):
    pytest.importorskip("torch")
    monkeypatch.setenv("RLVR_REWARD_DATASET", "gsm8k")
    monkeypatch.setenv("RLVR_REWARD_SCALE", "10")
    out = openrlhf_adapter.reward_func(["P #### 3", "P #### 4"], ["P", "P"], ["3", "3"])
    assert out["rewards"].tolist() == [10.0, 0.0] and out["scores"].tolist() == [1.0, 0.0]


def test_openrlhf_plain_label_without_env_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("RLVR_REWARD_DATASET", raising=False)
    with pytest.raises(ValueError, match="RLVR_REWARD_DATASET"):
        openrlhf_adapter.reward_func(["P #### 3"], ["P"], ["3"])


def test_openrlhf_ifeval_style_json_ground_truth_is_not_mistaken_for_a_wrapper(monkeypatch):
    monkeypatch.setenv("RLVR_REWARD_DATASET", "gsm8k")
    gt = json.dumps({"func_name": "validate_lowercase"})
    assert openrlhf_adapter.parse_label(gt) == ("gsm8k", gt)


def test_openrlhf_per_sample_calls_from_threads_with_a_hang():
    """OpenRLHF calls reward_func per sample through asyncio.to_thread: concurrent calls, one of them hanging."""
    pytest.importorskip("torch")

    async def run_all():
        calls = [asyncio.to_thread(openrlhf_adapter.reward_func, [f"Q #### {k}"], ["Q"],
                                   [json.dumps({"dataset": "gsm8k", "ground_truth": str(k)})]) for k in range(12)]
        calls.append(asyncio.to_thread(openrlhf_adapter.reward_func, ["Q x"], ["Q"],
                                       [json.dumps({"dataset": "test_hangs", "ground_truth": "1"})]))
        return await asyncio.gather(*calls)

    results = asyncio.run(run_all())
    assert [r["rewards"].item() for r in results[:-1]] == [1.0] * 12
    hung = results[-1]
    assert hung["rewards"].item() == 0.0 and hung["extra_logs"]["reward_timeout"].item() == 1.0


# --- verl: compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs) -------------------
def test_verl_contract():
    module = _load_like_the_trainer(ADAPTERS / "verl.py", "custom_module")
    result = module.compute_score("openai/gsm8k", "so #### 18", "18", extra_info={"split": "test", "index": 0})
    assert result == {"score": 1.0, "reward_failed": 0.0}
    assert compute_score(data_source="lighteval/MATH", solution_str="\\boxed{2x-8}", ground_truth="2x-8")["score"] == 1.0
    assert compute_score("DigitalLearningGmbH/MATH-lighteval", "\\boxed{3}", "4")["score"] == 0.0
    assert compute_score("my_source", "#### 1", "1", extra_info={"verifier": "gsm8k"})["score"] == 1.0
    assert compute_score("x", "#### 1", "1", None, verifier="gsm8k", unknown_kw=1)["score"] == 1.0


def test_verl_failure_is_flagged_and_unknown_source_raises():
    assert compute_score("test_raises", "x", "y") == {"score": 0.0, "reward_failed": 1.0}
    with pytest.raises(UnknownVerifierError, match="known:"):
        compute_score("someone/unknown_data", "x", "y")


def test_verl_batch_form():
    out = compute_score_batch(["openai/gsm8k", "lighteval/MATH"], ["#### 2", "\\boxed{3}"], ["2", "4"], None)
    assert [r["score"] for r in out] == [1.0, 0.0]


# --- TRL: reward_func(prompts, completions, **dataset_columns) -> list[float] ----------------------------------
def test_trl_standard_format():
    reward = make_reward_func("gsm8k")
    out = reward(prompts=["Q1", "Q2"], completions=["#### 1", "#### 3"], ground_truth=["1", "2"],
                 trainer_state=None, completion_ids=[[1], [2]])
    assert out == [1.0, 0.0] and all(isinstance(v, float) for v in out)
    assert reward.__name__ == "rlvr_gsm8k_reward"


def test_trl_conversational_format_and_dataset_column():
    reward = make_reward_func()
    prompts = [[{"role": "user", "content": "Q1"}], [{"role": "user", "content": "Q2"}]]
    completions = [[{"role": "assistant", "content": "#### 1"}],
                   [{"role": "assistant", "content": [{"type": "text", "text": "\\boxed{\\frac{1}{2}}"}]}]]
    assert reward(prompts, completions, ground_truth=["1", "0.5"], dataset=["gsm8k", "math"]) == [1.0, 1.0]


def test_trl_errors():
    with pytest.raises(UnknownVerifierError):
        make_reward_func("no_such_verifier")
    with pytest.raises(KeyError, match="answer"):
        make_reward_func("gsm8k", ground_truth_column="answer")(["q"], ["#### 1"], ground_truth=["1"])
    assert make_reward_func("test_raises")(["q"], ["x"], ground_truth=["1"]) == [0.0]
