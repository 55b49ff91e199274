"""The shared-prompt pass (rlvr.actors.shared_prompt) against the plain pass over each full sequence, on the tiny
model: the same log-probs of every response token and the same gradient, for groups of different prompt lengths
and ragged responses (one of a single token)."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from rlvr.actors.batch import build_batch, gather_positions, grouped_micro_batches, sequence_lengths, trim
from rlvr.actors.scoring import response_logprobs
from rlvr.actors.shared_prompt import (
    SEGMENTED_ATTENTION,
    duplicate_prompt_lengths,
    packed_layout,
    prompt_groups,
    supports_packing,
    use_segmented_attention,
    worth_sharing,
)
from rlvr.algorithms import logprobs_from_logits

PROMPTS = [[5, 6, 7, 8, 9], [5, 6, 7, 8, 9], [11, 12, 13], [5, 6, 7, 8, 9], [11, 12, 13]]
RESPONSES = [[20, 21, 22], [23], [28, 29, 30, 31, 32, 33], [24, 25], [26, 27]]


def _plain_logits(model, batch):
    L, first = batch["input_ids"].shape[1], int(batch["index"][:, 0].min())
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], logits_to_keep=L - first)
    return gather_positions(out.logits, batch["index"] - first)


def _logprobs_and_grad(model, batch, shared: bool | None):
    """shared None: the reference, full logits of each whole sequence through the pure log-softmax function;
    True/False: the product's pass (rlvr.actors.scoring.response_logprobs) with and without prompt sharing."""
    model.zero_grad()
    if shared is None:
        lp = logprobs_from_logits(_plain_logits(model, batch) / 0.7, batch["response_ids"])
    else:
        lp = response_logprobs(model, batch, pad_id=0, share_prompts=shared, temperature=0.7)[0]
    weights = torch.linspace(-1.0, 2.0, lp.numel()).view_as(lp)
    ((lp * weights) * batch["response_mask"]).sum().backward()
    grad = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    return lp.detach() * batch["response_mask"], grad


@pytest.mark.parametrize("attention,checkpointing", [("sdpa", False), ("eager", False), ("sdpa", True),
                                                    ("segmented", False), ("segmented", True)])
def test_shared_prompt_pass_gives_the_plain_log_probs_and_gradient(tiny_model_dir, attention, checkpointing):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32,
                                                 attn_implementation="eager" if attention == "eager" else "sdpa")
    model.config.use_cache = False
    if attention == "segmented":  # the learner's: each response against [prompt | itself] only
        assert use_segmented_attention(model) and model.config._attn_implementation == SEGMENTED_ATTENTION
    if checkpointing:  # the packed pass is one plain forward: it needs no KV cache, so checkpointing is fine
        model.gradient_checkpointing_enable()
        model.train()
    assert supports_packing(model)
    vocab = model.config.vocab_size
    samples = [{"prompt_ids": [t % vocab for t in p], "response_ids": [t % vocab for t in r]}
               for p, r in zip(PROMPTS, RESPONSES)]
    batch = trim(build_batch(samples, pad_id=0))
    unique, group = prompt_groups(batch)
    assert len(unique) == 2 and group.tolist() == [0, 0, 1, 0, 1] and worth_sharing(batch)
    assert sorted(duplicate_prompt_lengths(batch)) == [3, 5, 5]
    # one packed row per prompt, no copies of it: 5 + (2 + 0 + 1) and 3 + (5 + 1) tokens
    layout = packed_layout(batch)
    assert layout["tokens"].shape == (2, 9) and (layout["owner"] != -2).sum(1).tolist() == [8, 9]
    lp_plain, g_plain = _logprobs_and_grad(model, batch, shared=None)
    for shared in (True, False):
        lp_ours, g_ours = _logprobs_and_grad(model, batch, shared=shared)
        torch.testing.assert_close(lp_ours, lp_plain, atol=2e-5, rtol=1e-5)
        assert torch.isfinite(g_ours).all()
        torch.testing.assert_close(g_ours, g_plain, atol=2e-5, rtol=1e-4)
    # one-token responses only: the prompt pass alone
    single = trim(build_batch([{"prompt_ids": s["prompt_ids"], "response_ids": s["response_ids"][:1]}
                               for s in samples], pad_id=0))
    torch.testing.assert_close(_logprobs_and_grad(model, single, shared=True)[0],
                               _logprobs_and_grad(model, single, shared=None)[0], atol=2e-5, rtol=1e-5)


def test_grouped_micro_batches_keep_a_prompts_samples_together():
    lengths = [8, 6, 9, 7, 5, 5]
    prompt_of_row = [0, 0, 1, 0, 1, 2]
    cuts = grouped_micro_batches(prompt_of_row, lengths, 3)
    assert cuts == [[2, 4, 0], [3, 1, 5]]  # group 1 (longest 9) first, then group 0, then group 2
    assert sorted(i for c in cuts for i in c) == list(range(6))
    assert sequence_lengths(build_batch([{"prompt_ids": [1], "response_ids": [2, 3]}], 0)) == [3]
