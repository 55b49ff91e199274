"""RLVR core pieces without Ray: config batch arithmetic, the learner's batch layout (micro-batches by length,
trimmed), per-request seeds, and the HF generation backend (seeded per request, log-probs at the sampling
temperature equal to the model's, raw when greedy, EOS handling)."""

from __future__ import annotations

import pytest
import torch
from rlvr_core_helpers import REPO

from core.config import ConfigError, load_config
from rlvr.actors.batch import length_sorted_micro_batches, select_rows, sequence_lengths, trim
from rlvr.actors.learner import build_batch
from rlvr.actors.learner import gather_positions as _gather_positions
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


def test_micro_batches_by_length_cover_every_row_once_and_trim_only_padding():
    samples = [{"prompt_ids": [1] * p, "response_ids": [2] * r} for p, r in ((3, 1), (1, 6), (5, 5), (2, 2), (1, 1))]
    b = build_batch(samples, pad_id=0)
    b["old_logprobs"] = None  # a None entry passes through
    lengths = sequence_lengths(b)
    assert lengths == [4, 7, 10, 4, 2]
    cuts = length_sorted_micro_batches(lengths, 2)
    assert cuts == [[2, 1], [0, 3], [4]]  # longest first; ties keep their order
    assert sorted(i for c in cuts for i in c) == list(range(5))
    mb = trim(select_rows(b, cuts[1]))  # rows 0 and 3: 4 tokens each, responses of 1 and 2
    assert mb["input_ids"].shape == (2, 4) and mb["response_ids"].shape == (2, 2) and mb["old_logprobs"] is None
    assert mb["response_mask"].tolist() == [[1, 0], [1, 1]]
    # the trimmed rows still point at the positions that predict their response tokens
    m = mb["response_mask"].bool()
    nxt = _gather_positions(mb["input_ids"], (mb["index"] + 1).clamp(max=3))
    assert (nxt[m] == mb["response_ids"][m]).all()
    assert int(mb["index"].max()) <= 3


def test_request_seeds_are_stable_and_distinct_and_chunks_keep_order():
    assert request_seed(0, 3, 1, 2) == request_seed(0, 3, 1, 2)
    seeds = {request_seed(0, s, p, k) for s in range(3) for p in range(4) for k in range(4)}
    assert len(seeds) == 48
    assert request_seed(0, 1, 0, 0) != request_seed(1, 1, 0, 0) != request_seed(0, 1, 0, 0, "eval")
    assert _chunks(list(range(7)), 3) == [[0, 1, 2], [3, 4], [5, 6]]
    assert _chunks([1], 2) == [[1], []]


def test_hf_generator_is_seeded_per_request_and_reports_sampling_logprobs(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    from rlvr.actors.generator import Generator

    gen = Generator(str(tiny_model_dir), backend="hf", max_model_len=128, device="cpu")
    p1, p2 = [1, 40, 41, 42, 2, 1, 50], [1, 60, 2, 1, 70, 71]
    alone = gen.generate([p1], [11], max_new_tokens=12, temperature=0.7)[0]
    batched = gen.generate([p2, p1, p1], [5, 11, 12], max_new_tokens=12, temperature=0.7)
    assert batched[1].response_ids == alone.response_ids  # same request, same seed: same tokens in any batch
    assert batched[2].response_ids != alone.response_ids  # another seed: another sample
    for ro in batched:
        assert len(ro.response_ids) == len(ro.logprobs) and ro.finish_reason in ("stop", "length")
        assert ro.finish_reason == "length" or ro.response_ids[-1] in gen.eos_ids
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    seq = torch.tensor([p1 + alone.response_ids])
    with torch.no_grad():
        logits = model(seq).logits[0, len(p1) - 1:-1].float()
    picked = torch.tensor(alone.response_ids)[:, None]
    want = torch.log_softmax(logits / 0.7, -1).gather(1, picked).squeeze(1)  # the distribution sampled from
    assert torch.allclose(torch.tensor(alone.logprobs), want, atol=1e-4)
    raw = torch.log_softmax(logits, -1).gather(1, picked).squeeze(1)
    assert not torch.allclose(torch.tensor(alone.logprobs), raw, atol=1e-3)
    # greedy: raw log-probs (the weight-sync check compares them with the learner's at temperature 1)
    greedy = gen.generate([p1], [0], max_new_tokens=6, temperature=0.0)[0]
    with torch.no_grad():
        glogits = model(torch.tensor([p1 + greedy.response_ids])).logits[0, len(p1) - 1:-1].float()
    graw = torch.log_softmax(glogits, -1).gather(1, torch.tensor(greedy.response_ids)[:, None]).squeeze(1)
    assert torch.allclose(torch.tensor(greedy.logprobs), graw, atol=1e-4)
    # top-p: the log-prob of the renormalised nucleus a token was drawn from (>= its full-softmax log-prob)
    nucleus = gen.generate([p1], [11], max_new_tokens=12, temperature=0.7, top_p=0.5)[0]
    with torch.no_grad():
        nlogits = model(torch.tensor([p1 + nucleus.response_ids])).logits[0, len(p1) - 1:-1].float()
    full = torch.log_softmax(nlogits / 0.7, -1).gather(1, torch.tensor(nucleus.response_ids)[:, None]).squeeze(1)
    assert (torch.tensor(nucleus.logprobs) >= full - 1e-5).all() and max(nucleus.logprobs) <= 1e-6
    # loading perturbed weights changes greedy log-probs; reloading the originals restores them
    sd = model.state_dict()
    gen.load_weights({k: v + 0.1 for k, v in sd.items()})
    assert gen.generate([p1], [0], max_new_tokens=6, temperature=0.0)[0].logprobs != greedy.logprobs
    gen.load_weights(sd)
    again = gen.generate([p1], [0], max_new_tokens=6, temperature=0.0)[0]
    assert again.response_ids == greedy.response_ids
    assert again.logprobs == pytest.approx(greedy.logprobs, abs=1e-5)


@pytest.mark.slow
def test_vllm_generator_reports_log_probs_at_the_sampling_temperature(tiny_model_dir):
    """vLLM's processed log-probs: logits / temperature when sampling (the behaviour policy of asynchronous
    rollouts), raw when greedy; both equal the HF model's."""
    from transformers import AutoModelForCausalLM

    from rlvr.actors.generator import Generator, vllm_available

    if not vllm_available():
        pytest.skip("vllm is not installed")
    gen = Generator(str(tiny_model_dir), backend="vllm", max_model_len=128, max_num_seqs=4, device="cpu")
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    p1 = [1, 40, 41, 42, 2, 1, 50]
    for temperature in (0.7, 0.0):
        ro = gen.generate([p1], [11], max_new_tokens=10, temperature=temperature)[0]
        with torch.no_grad():
            logits = model(torch.tensor([p1 + ro.response_ids])).logits[0, len(p1) - 1:-1].float()
        want = torch.log_softmax(logits / (temperature or 1.0), -1)
        want = want.gather(1, torch.tensor(ro.response_ids)[:, None]).squeeze(1)
        assert torch.allclose(torch.tensor(ro.logprobs), want, atol=1e-4), temperature


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
