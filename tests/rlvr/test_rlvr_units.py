"""RLVR core pieces without Ray: config batch arithmetic, the learner's batch layout, per-request seeds, and the HF
generation backend (seeded per request, raw log-probs equal to the model's, EOS handling)."""

from __future__ import annotations

import pytest
import torch
from rlvr_core_helpers import REPO

from rlvr.actors.learner import _gather_positions, build_batch
from rlvr.config import RLVRConfig
from rlvr.trainer import _chunks, request_seed
from rlvr.utils.config import ConfigError, load_config


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
