"""CPU bf16 autocast (engine.cpu_autocast): fp32 weights and optimiser state, bf16 matmuls. Its loss and
gradients must agree with fp32 within a stated tolerance: PPO loss within 2% (relative), gradient direction
cosine > 0.99, token log-probs within 0.05 nats."""

from __future__ import annotations

import pytest
import torch

from core.device import autocast_context, cpu_supports_bf16, detect_device
from rlvr.algorithms import logprobs_from_logits, ppo_policy_loss


def _model():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=128, num_attention_heads=4, num_key_value_heads=2, head_dim=32,
                      num_hidden_layers=2, intermediate_size=256, vocab_size=257, max_position_embeddings=128)
    return LlamaForCausalLM(cfg)


def _loss_and_grad(model, ids, mode):
    model.zero_grad()
    with autocast_context(mode, detect_device("cpu", 1)):
        logits = model(input_ids=ids).logits[:, :-1]
    lp = logprobs_from_logits(logits.float(), ids[:, 1:])
    adv = torch.linspace(-1, 1, ids.shape[0])[:, None].expand_as(lp)
    loss, _ = ppo_policy_loss(lp, lp.detach() - 0.01, adv, torch.ones_like(lp))
    loss.backward()
    grad = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    return loss.item(), grad, lp.detach()


def test_autocast_modes():
    cpu = detect_device("cpu", 1)
    with autocast_context("off", cpu):
        assert not torch.is_autocast_enabled("cpu")
    with autocast_context("bf16", cpu):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    with autocast_context("auto", cpu):
        assert torch.is_autocast_enabled("cpu") == cpu_supports_bf16()
    with pytest.raises(ValueError, match="autocast mode"):
        autocast_context("fp8", cpu)


def test_bf16_autocast_loss_and_gradients_match_fp32():
    model = _model()
    assert all(p.dtype == torch.float32 for p in model.parameters())
    ids = torch.randint(0, 257, (4, 48), generator=torch.Generator().manual_seed(3))
    loss32, grad32, lp32 = _loss_and_grad(model, ids, "off")
    loss16, grad16, lp16 = _loss_and_grad(model, ids, "bf16")
    assert all(p.dtype == torch.float32 for p in model.parameters())  # master weights untouched
    assert abs(loss16 - loss32) <= 0.02 * abs(loss32)
    assert torch.nn.functional.cosine_similarity(grad16, grad32, dim=0) > 0.99
    assert (lp16 - lp32).abs().max() < 0.05
