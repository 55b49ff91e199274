"""End-to-end runs on the tiny model (DeepSpeed ZeRO-0 on CPU, gloo): SFT learns, micro-batching does not change
the loss, resume is exact, DPO reuses cached reference log-probs, the RM separates a toy set and loads as a value
model, two CPU ranks match one, and the CLI reports bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from core.metrics import read_metrics
from sft_dpo import dpo as dpo_mod
from sft_dpo.dpo import DPOConfig, train_dpo
from sft_dpo.reward_model import RMConfig, load_value_model, train_reward_model
from sft_dpo.sft import SFTConfig, train_sft

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture(scope="module")
def sft_file(tmp_path_factory):
    rows = [{"messages": [{"role": "user", "content": f"What is {i} + {i}?"},
                          {"role": "assistant", "content": f"The answer is {2 * i}." + " ok" * (i % 4)}]}
            for i in range(16)]
    return _jsonl(tmp_path_factory.mktemp("data") / "sft.jsonl", rows)


@pytest.fixture(scope="module")
def pref_file(tmp_path_factory):
    rows = [{"chosen": [{"role": "user", "content": f"What is {i} + {i}?"},
                        {"role": "assistant", "content": f"The answer is {2 * i}."}],
             "rejected": [{"role": "user", "content": f"What is {i} + {i}?"},
                          {"role": "assistant", "content": "7 7 7 7 7 7 7"}]} for i in range(24)]
    return _jsonl(tmp_path_factory.mktemp("data") / "pref.jsonl", rows)


def _sft(tiny, data, out, **kw):
    base = {"model": str(tiny), "output_dir": str(out), "seed": 3, "data": {"path": data, "max_length": 64},
            "engine": {"num_threads": 1}, "max_steps": 4,
            "optim": {"lr": 3e-3, "per_device_batch_size": 2, "gradient_accumulation_steps": 2,
                      "lr_scheduler": "linear", "warmup_steps": 1}}
    for k, v in kw.items():
        if isinstance(v, dict):
            base[k] = {**base.get(k, {}), **v}
        else:
            base[k] = v
    return SFTConfig.model_validate(base)


def _losses(out):
    return {m["step"]: m for m in read_metrics(out) if "loss" in m}


def test_sft_loss_falls_and_run_folder_is_complete(tiny_model_dir, sft_file, tmp_path):
    out = tmp_path / "sft"
    res = train_sft(_sft(tiny_model_dir, sft_file, out, max_steps=12, optim={"lr_scheduler": "constant"}))
    steps = _losses(out)
    first = sum(steps[s]["loss"] for s in (1, 2, 3)) / 3
    last = sum(steps[s]["loss"] for s in (10, 11, 12)) / 3
    assert last < 0.7 * first, (first, last)
    start = read_metrics(out)[0]
    assert start["batch/effective_batch_size"] == 4 and start["batch/lr_bs_ratio"] == pytest.approx(3e-3 / 4)
    assert (out / "config.yaml").is_file() and res.model_dir == out / "final" and res.steps == 12
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(res.model_dir)  # HF format
    # a finished run returns at once without training again
    n_lines = len(read_metrics(out))
    again = train_sft(_sft(tiny_model_dir, sft_file, out, max_steps=12, optim={"lr_scheduler": "constant"}))
    assert again.steps == 12 and len(read_metrics(out)) == n_lines


def test_micro_batch_split_does_not_change_the_loss(tiny_model_dir, sft_file, tmp_path):
    """Rows have different numbers of target tokens, so a per-micro-batch mean would differ; ours must not."""
    shapes = [(4, 1), (1, 4), (2, 2)]
    runs = []
    for b, g in shapes:
        out = tmp_path / f"b{b}g{g}"
        train_sft(_sft(tiny_model_dir, sft_file, out, max_steps=3,
                       optim={"per_device_batch_size": b, "gradient_accumulation_steps": g}))
        runs.append(_losses(out))
    for run in runs[1:]:
        for s in (1, 2, 3):
            assert run[s]["loss"] == pytest.approx(runs[0][s]["loss"], rel=1e-5)
            assert run[s]["grad_norm"] == pytest.approx(runs[0][s]["grad_norm"], rel=1e-4)


def test_resume_gives_the_same_next_steps(tiny_model_dir, sft_file, tmp_path):
    full, split = tmp_path / "full", tmp_path / "split"
    train_sft(_sft(tiny_model_dir, sft_file, full, max_steps=6))
    stopped = train_sft(_sft(tiny_model_dir, sft_file, split, max_steps=6, stop_after_steps=3))
    assert stopped.steps == 3 and not (split / "final").exists()
    assert (split / "checkpoints" / "step_00000003" / "hf" / "config.json").is_file()
    train_sft(_sft(tiny_model_dir, sft_file, split, max_steps=6))
    a, b = _losses(full), _losses(split)
    assert sorted(b) == [1, 2, 3, 4, 5, 6]  # no duplicated or missing metric lines
    for s in (4, 5, 6):  # steps after the resume: same data, LR, optimiser state
        assert b[s]["loss"] == pytest.approx(a[s]["loss"], rel=1e-6, abs=1e-7)
        assert b[s]["lr"] == pytest.approx(a[s]["lr"])
        assert b[s]["grad_norm"] == pytest.approx(a[s]["grad_norm"], rel=1e-5)
    assert [m for m in read_metrics(split) if m.get("resumed_from_step") == 3]


def _dpo(tiny, path, out, cache, data=None, **kw):
    return DPOConfig.model_validate({
        "model": str(tiny), "output_dir": str(out), "ref_cache_dir": str(cache), "beta": 1.0, "max_steps": 3,
        "data": {"path": path, "max_length": 64, **(data or {})}, "engine": {"num_threads": 1},
        "optim": {"lr": 1e-3, "per_device_batch_size": 2, "gradient_accumulation_steps": 2,
                  "lr_scheduler": "constant"}, **kw})


def test_dpo_caches_reference_logprobs_and_reuses_them(tiny_model_dir, pref_file, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    train_dpo(_dpo(tiny_model_dir, pref_file, tmp_path / "d1", cache))
    first = read_metrics(tmp_path / "d1")
    assert first[0]["ref_cache/hit"] == 0.0 and len(list(cache.glob("*.pt"))) == 1
    steps = _losses(tmp_path / "d1")
    assert steps[1]["loss"] == pytest.approx(0.6931, abs=1e-3)  # policy == reference at step 1
    assert steps[3]["loss"] < steps[1]["loss"] and steps[3]["rewards/accuracies"] > 0.5
    for key in ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"):
        assert key in steps[3]

    def no_reference(*a, **k):
        raise AssertionError("reference model loaded although the cache should be hit")

    monkeypatch.setattr(dpo_mod, "load_reference_model", no_reference)
    # another run, another loss type, same data + reference: the cache serves it
    train_dpo(_dpo(tiny_model_dir, pref_file, tmp_path / "d2", cache, loss_type="dpo"))
    assert read_metrics(tmp_path / "d2")[0]["ref_cache/hit"] == 1.0
    # a different truncation changes the tokenised pairs, hence the key: the reference must be recomputed
    with pytest.raises(AssertionError, match="reference model loaded"):
        train_dpo(_dpo(tiny_model_dir, pref_file, tmp_path / "d3", cache, data={"max_length": 20}))


def test_reward_model_separates_toy_pairs_and_loads_as_value_model(tiny_model_dir, pref_file, tmp_path):
    out = tmp_path / "rm"
    res = train_reward_model(RMConfig.model_validate({
        "model": str(tiny_model_dir), "output_dir": str(out), "max_steps": 10, "engine": {"num_threads": 1},
        "data": {"path": pref_file, "max_length": 64, "eval_fraction": 0.25},
        "optim": {"lr": 1e-3, "per_device_batch_size": 4, "lr_scheduler": "constant"}}))
    assert res.metrics["eval/pairs"] == 6
    assert res.metrics["eval/accuracy"] >= 0.9  # chance is 0.5
    steps = _losses(out)
    assert steps[10]["loss"] < steps[1]["loss"]

    from transformers import (
        AutoModelForSequenceClassification,
        AutoModelForTokenClassification,
        AutoTokenizer,
    )

    tok = AutoTokenizer.from_pretrained(res.model_dir)
    enc = tok(["<|im_start|>user\nhi<|im_end|>\n", "<|im_start|>user\nWhat is 1 + 1?<|im_end|>\n"],
              padding=True, return_tensors="pt")
    vm = load_value_model(str(res.model_dir))
    with torch.no_grad():
        values = vm(enc["input_ids"], enc["attention_mask"])
        rewards = vm.score_sequences(enc["input_ids"], enc["attention_mask"])
        seq = AutoModelForSequenceClassification.from_pretrained(res.model_dir)(**enc).logits.squeeze(-1)
        tokcls = AutoModelForTokenClassification.from_pretrained(res.model_dir, num_labels=1)(**enc).logits
    assert values.shape == enc["input_ids"].shape
    assert torch.allclose(tokcls.squeeze(-1), values, atol=1e-5)
    assert torch.allclose(rewards, seq, atol=1e-5)  # HF's own last-token pick agrees with ours


def test_world_size_two_on_cpu_matches_one_rank(tiny_model_dir, sft_file, tmp_path):
    one, two = tmp_path / "w1", tmp_path / "w2"
    train_sft(_sft(tiny_model_dir, sft_file, one, max_steps=2,
                   optim={"per_device_batch_size": 1, "gradient_accumulation_steps": 4}))
    res = train_sft(_sft(tiny_model_dir, sft_file, two, max_steps=2, dist={"world_size": 2},
                         optim={"per_device_batch_size": 1, "gradient_accumulation_steps": 2}))
    assert res.model_dir.is_dir() and res.steps == 2
    a, b = _losses(one), _losses(two)
    assert read_metrics(two)[0]["batch/world_size"] == 2
    for s in (1, 2):
        assert b[s]["loss"] == pytest.approx(a[s]["loss"], rel=1e-5)


def test_cli_runs_and_reports_bad_input(tiny_model_dir, sft_file, tmp_path, capsys):
    from rlvr.cli import main

    out = tmp_path / "cli"
    code = main(["sft", "--config", str(CONFIGS / "sft/tiny_cpu.yaml"), f"model={tiny_model_dir}", f"output_dir={out}",
                 f"data.path={sft_file}", "max_steps=2"])
    assert code == 0 and (out / "final").is_dir()
    assert str(out / "final") in capsys.readouterr().out
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"chosen": [], "rejected": "x", "prompt": "p"}) + "\n")
    code = main(["dpo", "--config", str(CONFIGS / "dpo/tiny_cpu.yaml"), f"model={tiny_model_dir}",
                 f"output_dir={tmp_path / 'd'}", f"data.path={bad}"])
    assert code == 2
    assert "bad.jsonl:1: empty chosen" in capsys.readouterr().err  # errors go to stderr (one line)
