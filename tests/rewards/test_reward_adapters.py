"""Adapters checked against the documented call contracts of OpenRLHF, verl and TRL (none of them installed)."""

from __future__ import annotations

import asyncio
import importlib.util
import json
from pathlib import Path

import faulty_verifiers  # noqa: F401 - registers test_hangs etc.
import pytest

import rewards.adapters
from rewards import scoring
from rewards.adapters.trl import make_reward_func
from rewards.registry import UnknownVerifierError

ADAPTERS = Path(rewards.adapters.__file__).parent
END_CHECKER = {"instruction_id_list": ["startend:end_checker"], "kwargs": [{"end_phrase": "Is there anything else?"}]}


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


def _openrlhf(monkeypatch, **env):
    for key in ("RLVR_REWARD_DATASET", "RLVR_REWARD_SCALE", "RLVR_STRIP_TOKENS", "RLVR_REWARD_TIMEOUT_S"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return _load_like_the_trainer(ADAPTERS / "openrlhf.py", "reward_func")


def _verl(monkeypatch, **env):
    for key in ("RLVR_VERL_SEMANTICS", "RLVR_VERL_DATA_SOURCES"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return _load_like_the_trainer(ADAPTERS / "verl.py", "custom_module")


# --- OpenRLHF: reward_func(queries, prompts, labels, **kwargs) -> {"rewards", "scores", "extra_logs"} ----------
def test_openrlhf_contract(monkeypatch):
    torch = pytest.importorskip("torch")
    reward_func = _openrlhf(monkeypatch, RLVR_REWARD_DATASET="from_label").reward_func
    prompts = ["Example: #### 5\nQ: 2+2?\nA:", "Q: half of one?\nA:"]
    responses = [" The answer is 4.<|im_end|>", " \\boxed{\\frac{1}{2}}"]
    labels = [json.dumps({"dataset": "gsm8k", "ground_truth": "4"}), json.dumps({"dataset": "math", "ground_truth": "0.5"})]
    out = reward_func([p + r for p, r in zip(prompts, responses)], prompts, labels, extra_arg="ignored")
    assert set(out) == {"rewards", "scores", "extra_logs"}
    assert isinstance(out["rewards"], torch.Tensor) and out["rewards"].shape == (2,)
    # the prompt's "#### 5" is not scored: the query is stripped to the response
    assert out["rewards"].tolist() == [1.0, 1.0] and out["scores"].tolist() == [1.0, 1.0]
    assert set(out["extra_logs"]) == {"verified", "reward_error", "reward_timeout"}
    assert all(isinstance(v, torch.Tensor) and v.shape == (2,) for v in out["extra_logs"].values())


@pytest.mark.parametrize("tail", ["<|im_end|>", "<|im_end|>\n<|endoftext|>", "</s>", "<|eot_id|>", "<|im_end|><pad><pad>"])
def test_openrlhf_ifeval_end_phrase_with_end_of_turn_token(monkeypatch, tail):
    """The query is decoded with skip_special_tokens=False: the end-of-turn token must not fail the end phrase."""
    pytest.importorskip("torch")
    mod = _openrlhf(monkeypatch, RLVR_REWARD_DATASET="ifeval")
    prompt = "<|im_start|>user\nEnd with 'Is there anything else?'<|im_end|>\n<|im_start|>assistant\n"
    query = prompt + "Here you go. Is there anything else?" + tail
    assert mod.reward_func([query], [prompt], [json.dumps(END_CHECKER)])["rewards"].tolist() == [1.0]


def test_openrlhf_quotation_and_json_with_end_token(monkeypatch):
    pytest.importorskip("torch")
    mod = _openrlhf(monkeypatch, RLVR_REWARD_DATASET="ifeval")
    labels = [{"instruction_id_list": ["startend:quotation"], "kwargs": [{}]},
              {"instruction_id_list": ["detectable_format:json_format"], "kwargs": [{}]}]
    queries = ['P"A quoted answer."<|im_end|>', 'P{"answer": 4}<|im_end|>']
    out = mod.reward_func(queries, ["P", "P"], [json.dumps(label) for label in labels])
    assert out["rewards"].tolist() == [1.0, 1.0]


def test_strip_end_tokens_keeps_the_responses_own_text(monkeypatch):
    mod = _openrlhf(monkeypatch, RLVR_REWARD_DATASET="gsm8k", RLVR_STRIP_TOKENS="<|my_end|>")
    assert mod.strip_end_tokens("answer \n<|im_end|>\n<|endoftext|>") == "answer \n"
    assert mod.strip_end_tokens("trailing space kept  ") == "trailing space kept  "
    assert mod.strip_end_tokens("<|im_end|> inside is kept") == "<|im_end|> inside is kept"
    assert mod.response_from_query("P x<|my_end|>", "P", mod.STRIP_TOKENS) == " x"


def test_openrlhf_plain_labels_use_env_dataset_and_scale(monkeypatch):
    pytest.importorskip("torch")
    mod = _openrlhf(monkeypatch, RLVR_REWARD_DATASET="gsm8k", RLVR_REWARD_SCALE="10")
    out = mod.reward_func(["P #### 3", "P #### 4"], ["P", "P"], ["3", "3"])
    assert out["rewards"].tolist() == [10.0, 0.0] and out["scores"].tolist() == [1.0, 0.0]


@pytest.mark.parametrize("env, error, needle", [
    ({}, RuntimeError, "RLVR_REWARD_DATASET is not set"),
    ({"RLVR_REWARD_DATASET": "no_such_verifier"}, UnknownVerifierError, "unknown verifier 'no_such_verifier'"),
    ({"RLVR_REWARD_DATASET": "gsm8k", "RLVR_REWARD_SCALE": "ten"}, ValueError, "RLVR_REWARD_SCALE='ten'"),
    ({"RLVR_REWARD_DATASET": "gsm8k", "RLVR_REWARD_TIMEOUT_S": "0"}, ValueError, "RLVR_REWARD_TIMEOUT_S='0'"),
])
def test_openrlhf_bad_environment_fails_when_the_file_is_loaded(monkeypatch, env, error, needle):
    with pytest.raises(error, match=needle):
        _openrlhf(monkeypatch, **env)


def test_openrlhf_from_label_needs_json_labels(monkeypatch):
    mod = _openrlhf(monkeypatch, RLVR_REWARD_DATASET="from_label")
    with pytest.raises(ValueError, match="not a JSON object with 'dataset' and 'ground_truth'"):
        mod.reward_func(["P #### 3"], ["P"], ["3"])


def test_openrlhf_ifeval_style_json_ground_truth_is_not_mistaken_for_a_wrapper(monkeypatch):
    mod = _openrlhf(monkeypatch, RLVR_REWARD_DATASET="gsm8k")
    gt = json.dumps({"func_name": "validate_lowercase"})
    assert mod.parse_label(gt) == ("gsm8k", gt)


def test_openrlhf_per_sample_calls_from_threads_with_a_hang(monkeypatch):
    """OpenRLHF calls reward_func per sample through asyncio.to_thread: concurrent calls, one of them hanging."""
    pytest.importorskip("torch")
    reward_func = _openrlhf(monkeypatch, RLVR_REWARD_DATASET="from_label").reward_func

    async def run_all():
        calls = [asyncio.to_thread(reward_func, [f"Q #### {k}"], ["Q"],
                                   [json.dumps({"dataset": "gsm8k", "ground_truth": str(k)})]) for k in range(12)]
        calls.append(asyncio.to_thread(reward_func, ["Q x"], ["Q"],
                                       [json.dumps({"dataset": "test_hangs", "ground_truth": "1"})]))
        return await asyncio.gather(*calls)

    results = asyncio.run(run_all())
    assert [r["rewards"].item() for r in results[:-1]] == [1.0] * 12
    hung = results[-1]
    assert hung["rewards"].item() == 0.0 and hung["extra_logs"]["reward_timeout"].item() == 1.0


# --- verl: compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs) -------------------
def test_verl_contract(monkeypatch):
    module = _verl(monkeypatch)
    result = module.compute_score("openai/gsm8k", "so #### 18", "18", extra_info={"split": "test", "index": 0})
    assert result == {"score": 1.0, "acc": 1.0, "reward_failed": 0.0}
    cs = module.compute_score
    assert cs(data_source="lighteval/MATH", solution_str="\\boxed{2x-8}", ground_truth="2x-8")["score"] == 1.0
    assert cs("DigitalLearningGmbH/MATH-lighteval", "\\boxed{3}", "4")["score"] == 0.0
    assert cs("my_source", "#### 1", "1", extra_info={"verifier": "gsm8k"})["score"] == 1.0
    assert cs("x", "#### 1", "1", None, verifier="gsm8k", unknown_kw=1)["score"] == 1.0


def test_verl_failure_is_flagged_and_unknown_source_raises(monkeypatch):
    module = _verl(monkeypatch)
    assert module.compute_score("test_raises", "x", "y") == {"score": 0.0, "acc": 0.0, "reward_failed": 1.0}
    with pytest.raises(UnknownVerifierError, match="not one of verl's"):
        module.compute_score("someone/unknown_data", "x", "y")


def test_verl_batch_form(monkeypatch):
    module = _verl(monkeypatch)
    out = module.compute_score_batch(["openai/gsm8k", "lighteval/MATH"], ["#### 2", "\\boxed{3}"], ["2", "4"], None)
    assert [r["score"] for r in out] == [1.0, 0.0]
    out = module.compute_score_batch(["math", "math"], ["Answer: 3", "Answer: 4"], ["3", "3"], None, semantics="verl")
    assert [r["score"] for r in out] == [1.0, -1.0]


@pytest.mark.parametrize("source", ["math_dapo", "aime2024", "aime_2025", "numina_olympiads", "numina_cn_k12",
                                    "lighteval/MATH", "DigitalLearningGmbH/MATH-lighteval", "HuggingFaceH4/MATH-500",
                                    "math", "math_dapo_reasoning"])
def test_verl_common_data_sources_map_to_our_math_verifier(monkeypatch, source):
    module = _verl(monkeypatch)
    assert module.verifier_name(source) == "math"
    assert module.compute_score(source, "so \\boxed{\\frac{1}{2}}", "0.5")["score"] == 1.0


# where verl's default scorers and ours disagree (the examples first); the docstring of
# rewards.adapters.verl lists the same
DIFFERENCES = [
    ("openai/gsm8k", "#### 72.0", "72", 1.0, 0.0),
    ("openai/gsm8k", "The answer is 72", "72", 1.0, 0.0),
    ("openai/gsm8k", "#### 72" + " and some more words" * 20, "72", 1.0, 0.0),
    ("openai/gsm8k", "\\boxed{72}", "72", 1.0, 0.0),
    ("openai/gsm8k", "#### 1,234", "1,234", 1.0, 0.0),
    ("openai/gsm8k", "#### 72", "72", 1.0, 1.0),
    ("math", "Answer: 5", "4", 0.0, -1.0),
    ("math_dapo", "\\boxed{\\frac{1}{2}}", "\\frac{1}{2}", 1.0, 1.0),  # no "Answer:": boxed, raw strings
    ("math_dapo", "\\boxed{0.5}", "\\frac{1}{2}", 1.0, -1.0),
    ("math_dapo", "\\boxed{7}" + " so that is it" * 10, "7", 1.0, -1.0),  # the box is not in the last 100
    ("aime2024", "Answer: 0.5", "\\frac{1}{2}", 1.0, -1.0),
    ("aime2024", "Answer: \\frac12", "\\frac{1}{2}", 0.0, 1.0),  # math-verify reads no answer here
    ("math_dapo", "Answer: x+1", "x+1", 0.0, 1.0),  # a plain-text expression: math-verify reads none
    ("lighteval/MATH", "\\boxed{x*2}", "2x", 1.0, 0.0),
    ("lighteval/MATH", "\\boxed{\\sqrt{2}/2}", "\\frac{\\sqrt2}{2}", 1.0, 0.0),
    ("lighteval/MATH", "\\boxed{0.5}", "\\frac{1}{2}", 1.0, 1.0),
]


@pytest.mark.parametrize("source, response, truth, ours, verls", DIFFERENCES)
def test_verl_semantics_per_call(monkeypatch, source, response, truth, ours, verls):
    module = _verl(monkeypatch)
    assert module.compute_score(source, response, truth)["score"] == ours
    assert module.compute_score(source, response, truth, semantics="verl")["score"] == verls
    assert module.compute_score(source, response, truth, {"semantics": "verl"})["score"] == verls
    assert module.make_compute_score(semantics="verl")(source, response, truth)["score"] == verls


def test_verl_semantics_from_the_environment(monkeypatch):
    module = _verl(monkeypatch, RLVR_VERL_SEMANTICS="verl")
    assert module.compute_score("math", "Answer: 5", "4")["score"] == -1.0
    assert module.compute_score("math", "Answer: 5", "4", semantics="rlvr")["score"] == 0.0
    assert module.compute_score("gsm8k", "The answer is 4", "4")["score"] == 1.0  # not a verl source: ours


def test_verl_set_up_checks(monkeypatch):
    with pytest.raises(UnknownVerifierError, match="'someone/unknown'"):
        _verl(monkeypatch, RLVR_VERL_DATA_SOURCES="openai/gsm8k, someone/unknown")
    with pytest.raises(ValueError, match="semantics must be one of"):
        _verl(monkeypatch, RLVR_VERL_SEMANTICS="strict")
    module = _verl(monkeypatch, RLVR_VERL_DATA_SOURCES="openai/gsm8k,math_dapo,numina_olympiads")
    with pytest.raises(UnknownVerifierError, match="prime_math"):
        module.make_compute_score(["openai/gsm8k", "numina_olympiads"], semantics="verl")
    with pytest.raises(UnknownVerifierError, match="'nope/nope'"):
        module.make_compute_score(["openai/gsm8k", "nope/nope"])
    with pytest.raises(ValueError, match="semantics must be one of"):
        module.compute_score("openai/gsm8k", "#### 1", "1", semantics="VERL")
    assert module.check_data_sources(["openai/gsm8k", "math_dapo"], "verl") == {
        "openai/gsm8k": "verl_gsm8k", "math_dapo": "verl_math_dapo"}


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


def test_trl_errors(monkeypatch):
    with pytest.raises(UnknownVerifierError):
        make_reward_func("no_such_verifier")
    with pytest.raises(KeyError, match="answer"):
        make_reward_func("gsm8k", ground_truth_column="answer")(["q"], ["#### 1"], ground_truth=["1"])
    assert make_reward_func("test_raises")(["q"], ["x"], ground_truth=["1"]) == [0.0]
    monkeypatch.setenv("RLVR_REWARD_WORKERS", "zero")
    with pytest.raises(ValueError, match="RLVR_REWARD_WORKERS='zero' is not an integer"):
        make_reward_func("gsm8k")
