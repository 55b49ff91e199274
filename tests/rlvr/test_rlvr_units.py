"""RLVR core pieces without Ray: config batch arithmetic, the learner's batch layout, per-request seeds, and the HF
generation backend (seeded per request, raw log-probs equal to the model's, EOS handling)."""

from __future__ import annotations

import pytest
import torch
from rlvr_core_helpers import REPO

from core.config import ConfigError, load_config
from rlvr.actors.learner import _gather_positions, build_batch
from rlvr.config import RLVRConfig
from rlvr.trainer import _chunks, request_seed


def _cfg(*overrides):
    return load_config(RLVRConfig, REPO / "configs/rlvr/tiny_ppo.yaml", list(overrides))


def test_config_batch_arithmetic_and_errors():
    cfg = _cfg()
    assert cfg.rollout_batch_size == 8
    # 8 sequences / 1 rank / 2 mini-batches = 4 per optimiser step = 1 micro-batch of 4
    assert cfg.learner_optim("policy").gradient_accumulation_steps == 1
    cfg = _cfg("optim.per_device_batch_size=1")
    assert cfg.learner_optim("policy").gradient_accumulation_steps == 4
    assert cfg.kl_in_reward is True and cfg.use_critic
    grpo = load_config(RLVRConfig, REPO / "configs/rlvr/tiny_grpo.yaml")
    assert grpo.kl_in_reward is False and not grpo.use_critic
    with pytest.raises(ConfigError, match="world_size"):
        _cfg("dist.world_size=3")
    with pytest.raises(ConfigError, match="num_mini_batches"):
        _cfg("ppo.num_mini_batches=3")
    with pytest.raises(ConfigError, match="samples_per_prompt"):
        _cfg("algorithm=grpo", "rollout.samples_per_prompt=1")
    with pytest.raises(ConfigError, match="gradient_accumulation_steps"):
        _cfg("optim.per_device_batch_size=1", "optim.gradient_accumulation_steps=3")
    with pytest.raises(ConfigError, match="unknown key"):
        _cfg("rollout.temprature=1.0")


def test_build_batch_aligns_response_tokens_with_their_predicting_positions():
    samples = [{"prompt_ids": [5, 6, 7], "response_ids": [8, 9]}, {"prompt_ids": [1], "response_ids": [2, 3, 4]}]
    b = build_batch(samples, pad_id=0)
    assert b["input_ids"].tolist() == [[5, 6, 7, 8, 9], [1, 2, 3, 4, 0]]
    assert b["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]]
    assert b["response_ids"].tolist() == [[8, 9, 0], [2, 3, 4]]
    assert b["response_mask"].tolist() == [[1, 1, 0], [1, 1, 1]]
    # logits at position index[i, t] predict response token t, which sits at index[i, t] + 1
    nxt = _gather_positions(b["input_ids"], (b["index"] + 1).clamp(max=4))
    m = b["response_mask"].bool()
    assert (nxt[m] == b["response_ids"][m]).all()
    assert b["index"].tolist()[0][:2] == [2, 3]
    assert b["index"].tolist()[1] == [0, 1, 2]


def test_request_seeds_are_stable_and_distinct_and_chunks_keep_order():
    assert request_seed(0, 3, 1, 2) == request_seed(0, 3, 1, 2)
    seeds = {request_seed(0, s, p, k) for s in range(3) for p in range(4) for k in range(4)}
    assert len(seeds) == 48
    assert request_seed(0, 1, 0, 0) != request_seed(1, 1, 0, 0) != request_seed(0, 1, 0, 0, "eval")
    assert _chunks(list(range(7)), 3) == [[0, 1, 2], [3, 4], [5, 6]]
    assert _chunks([1], 2) == [[1], []]


def test_hf_generator_is_seeded_per_request_and_reports_raw_logprobs(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    from rlvr.actors.generator import Generator

    gen = Generator(str(tiny_model_dir), backend="hf", max_model_len=128, device="cpu")
    p1, p2 = [1, 40, 41, 42, 2, 1, 50], [1, 60, 2, 1, 70, 71]
    alone = gen.generate([p1], [11], max_new_tokens=12)[0]
    batched = gen.generate([p2, p1, p1], [5, 11, 12], max_new_tokens=12)
    assert batched[1].response_ids == alone.response_ids  # same request, same seed: same tokens in any batch
    assert batched[2].response_ids != alone.response_ids  # another seed: another sample
    for ro in batched:
        assert len(ro.response_ids) == len(ro.logprobs) and ro.finish_reason in ("stop", "length")
        assert ro.finish_reason == "length" or ro.response_ids[-1] in gen.eos_ids
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    seq = torch.tensor([p1 + alone.response_ids])
    with torch.no_grad():
        lp = torch.log_softmax(model(seq).logits[0, len(p1) - 1:-1].float(), -1)
    want = lp.gather(1, torch.tensor(alone.response_ids)[:, None]).squeeze(1)
    assert torch.allclose(torch.tensor(alone.logprobs), want, atol=1e-4)
    # loading perturbed weights changes greedy log-probs; reloading the originals restores them
    greedy = gen.generate([p1], [0], max_new_tokens=6, temperature=0.0)[0]
    sd = model.state_dict()
    gen.load_weights({k: v + 0.1 for k, v in sd.items()})
    assert gen.generate([p1], [0], max_new_tokens=6, temperature=0.0)[0].logprobs != greedy.logprobs
    gen.load_weights(sd)
    again = gen.generate([p1], [0], max_new_tokens=6, temperature=0.0)[0]
    assert again.response_ids == greedy.response_ids
    assert again.logprobs == pytest.approx(greedy.logprobs, abs=1e-5)


def test_reward_failures_are_counted_and_stop_the_run_past_the_budget(tiny_model_dir, tmp_path):
    """A hanging verifier is killed at its time limit and counted; a crashing one is counted; past
    rewards.max_error_fraction the step stops with TrainingStopped instead of training on zeros."""
    import json

    from rlvr.errors import TrainingStopped
    from rlvr.trainer import RLVRTrainer

    rows = [{"id": f"r{i}", "messages": [{"role": "user", "content": f"q{i}"}], "ground_truth": "1",
             "dataset": name} for i, name in enumerate(["rlvr_core_verifier:has_digit"] * 2
                                                       + ["rlvr_core_verifier:hangs", "rlvr_core_verifier:raises"])]
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = _cfg(f"model={tiny_model_dir}", f"output_dir={tmp_path / 'out'}", f"data.train=[{data}]", "data.eval=[]",
               "rewards.timeout_s=1.0", "rewards.max_error_fraction=0.5")
    trainer = RLVRTrainer(cfg)  # no actors: scoring only
    try:
        tok = trainer.tokenizer
        reqs = [{"row": row, "response_ids": tok("answer 7", add_special_tokens=False)["input_ids"]}
                for row in trainer.train_set]
        batch = trainer.score(reqs)  # 2 of 4 failed: exactly at the budget, allowed
        assert batch.values == [1.0, 1.0, 0.0, 0.0]
        assert batch.timeouts == 1 and batch.errors == 1
        assert batch.metrics()["reward/timeouts"] == 1.0 and batch.metrics()["reward/errors"] == 1.0
        strict = trainer.cfg.model_copy(update={"rewards": trainer.cfg.rewards.model_copy(
            update={"max_error_fraction": 0.25})})
        trainer.cfg = strict
        with pytest.raises(TrainingStopped, match="max_error_fraction"):
            trainer.score(reqs)
    finally:
        trainer.pool.close()
