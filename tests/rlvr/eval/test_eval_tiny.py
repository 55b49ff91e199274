"""`rlvr eval` end to end on the tiny model with --limit 3: structure, counts, metrics in [0, 1]."""

from __future__ import annotations

import json

import pytest

from rlvr.cli import main
from rlvr.eval import evaluate
from rlvr.eval.runner import parse_tasks


def _check(metrics: dict, keys: set[str], n: int):
    assert set(metrics) >= keys | {"n"}
    assert metrics["n"] == n
    for k in keys:
        assert 0.0 <= metrics[k] <= 1.0, (k, metrics)


def test_parse_tasks_and_cli_errors(tmp_path, capsys):
    assert parse_tasks("gsm8k, arc") == ["gsm8k", "arc_easy", "arc_challenge"]
    with pytest.raises(ValueError, match="mmlu"):
        parse_tasks("gsm8k,mmlu")
    assert main(["eval", "--model", str(tmp_path), "--tasks", "mmlu"]) == 2
    assert "mmlu" in capsys.readouterr().err
    assert main(["eval", "--model", str(tmp_path), "--tasks", "ifeval", "--data-dir", str(tmp_path)]) == 2
    assert str(tmp_path / "ifeval" / "input_data.jsonl") in capsys.readouterr().err


def test_multiple_choice_tasks_on_tiny_model(tiny_model_dir, shared_data):
    records = {}
    results = evaluate(str(tiny_model_dir), "arc_easy,arc_challenge,hellaswag", limit=3, data_dir=shared_data,
                       records_out=records)
    assert list(results) == ["arc_easy", "arc_challenge", "hellaswag"]
    for task, metrics in results.items():
        _check(metrics, {"acc", "acc_norm"}, 3)
        assert len(records[task]) == 3
        for rec in records[task]:
            assert len(rec["logliks"]) == 4 and all(ll < 0 for ll in rec["logliks"])
            assert rec["pred"] == max(range(4), key=lambda i: rec["logliks"][i])


class RecordingGenerator:
    """Answers every GSM8K question with its correct answer (looked up), recording the conversations."""

    def __init__(self, answers: dict[str, str]):
        self.answers = answers
        self.conversations = []

    def generate(self, conversations, max_new_tokens):
        self.conversations.extend(conversations)
        out = []
        for conv in conversations:
            question = conv[-1]["content"].split("\n")[0]
            out.append(f"Some working.\nThe answer is {self.answers.get(question, '0')}.")
        return out


def test_gsm8k_fewshot_turns_and_verifier(shared_data):
    from rlvr.eval.data import load_task_docs

    docs = load_task_docs("gsm8k", data_dir=shared_data)[:4]
    answers = {d["question"].split("\n")[0]: d["answer"] for d in docs[:3]}  # the 4th is answered wrongly
    gen = RecordingGenerator(answers)
    records = {}
    results = evaluate("unused", "gsm8k", limit=4, data_dir=shared_data, num_fewshot=2, generator=gen,
                       records_out=records)
    assert results["gsm8k"] == {"exact_match": 0.75, "n": 4, "num_fewshot": 2}
    conv = gen.conversations[0]
    assert [m["role"] for m in conv] == ["user", "assistant", "user", "assistant", "user"]
    train = load_task_docs("gsm8k", data_dir=shared_data, split="train")
    assert conv[1]["content"].endswith(f"The answer is {train[0]['answer']}.")
    assert conv[0]["content"].startswith(train[0]["question"])
    assert [r["score"] for r in records["gsm8k"]] == [1.0, 1.0, 1.0, 0.0]


def test_generative_tasks_on_tiny_model_with_hf(tiny_model_dir, shared_data, tmp_path):
    out = tmp_path / "results.json"
    code = main(["eval", "--model", str(tiny_model_dir), "--tasks", "gsm8k,ifeval", "--limit", "3",
                 "--data-dir", str(shared_data), "--backend", "hf", "--max-new-tokens", "8",
                 "--out", str(out), "--log-samples"])
    assert code == 0
    saved = json.loads(out.read_text())
    assert saved["limit"] == 3 and saved["tasks"] == ["gsm8k", "ifeval"]
    _check(saved["results"]["gsm8k"], {"exact_match"}, 3)
    _check(saved["results"]["ifeval"], {"prompt_level_strict", "prompt_level_loose", "inst_level_strict",
                                        "inst_level_loose"}, 3)
    samples = out.with_suffix(".ifeval.samples.jsonl").read_text().splitlines()
    assert len(samples) == 3
    first = json.loads(samples[0])
    assert len(first["strict"]) == len(first["instruction_id_list"])


def test_vllm_generator_on_tiny_model(tiny_model_dir):
    pytest.importorskip("vllm")
    from rlvr.eval.generation import make_generator

    gen = make_generator(str(tiny_model_dir), "vllm", batch_size=2)
    out = gen.generate([[{"role": "user", "content": "What is 2 + 3?"}], [{"role": "user", "content": "Hi"}],
                        [{"role": "user", "content": "Write a poem about the sea."}]], 6)
    assert len(out) == 3 and all(isinstance(o, str) for o in out)
    assert all(len(gen.tok(o, add_special_tokens=False)["input_ids"]) <= 7 for o in out)
