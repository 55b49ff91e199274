"""The training-math defects of issue 10, each pinned by a test that fails without its fix:
KL in the loss must not use k1; the PPO log-ratio is clamped; dropout is off and trainable engines run in
training mode (so gradient checkpointing really checkpoints); responses end at the chat template's end-of-turn
token on every backend, also when the tokenizer's EOS is another token."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch
from rlvr_core_helpers import REPO

from core.config import ConfigError, load_config
from rlvr.algorithms import kl_estimate, ppo_policy_loss
from rlvr.config import RLVRConfig

# ---- 1. KL in the loss ----


def test_k1_gradient_ignores_the_reference_and_k3_pulls_toward_it():
    lp = torch.tensor([-1.0, -2.0], requires_grad=True)
    grads = {}
    for kind in ("k1", "k3"):
        for ref in (-0.5, -3.0):
            lp.grad = None
            kl_estimate(lp, torch.full_like(lp, ref), kind).sum().backward()
            grads[kind, ref] = lp.grad.clone()
    # k1: d(lp - ref)/dlp = 1 whatever the reference is
    assert torch.equal(grads["k1", -0.5], grads["k1", -3.0])
    # k3: descending the gradient moves lp toward the reference from either side
    assert (grads["k3", -0.5] < 0).all() and (grads["k3", -3.0] > 0).all()


def test_kl_in_the_loss_rejects_k1_naming_the_key_and_defaults_to_k3():
    grpo = REPO / "configs/rlvr/tiny_grpo.yaml"
    with pytest.raises(ConfigError, match=r"ppo\.kl_estimator: k1 cannot be used .*override 'ppo.kl_estimator=k1'"):
        load_config(RLVRConfig, grpo, ["ppo.kl_estimator=k1"])
    assert load_config(RLVRConfig, grpo).kl_estimator == "k3"
    # KL in the reward (PPO, or GRPO with kl_in_reward): k1 stays allowed and is the default
    assert load_config(RLVRConfig, REPO / "configs/rlvr/tiny_ppo.yaml").kl_estimator == "k1"
    assert load_config(RLVRConfig, grpo, ["ppo.kl_estimator=k1", "ppo.kl_in_reward=true"]).kl_estimator == "k1"
    assert load_config(RLVRConfig, grpo, ["ppo.kl_estimator=k1", "ppo.kl_coef=0"]).kl_estimator == "k1"


def test_rlvr_train_cli_exits_2_on_k1_in_the_loss(capsys):
    from rlvr.driver import cli_main

    args = argparse.Namespace(config=str(REPO / "configs/rlvr/tiny_grpo.yaml"), overrides=["ppo.kl_estimator=k1"])
    assert cli_main(args) == 2
    err = capsys.readouterr().err
    assert "ppo.kl_estimator" in err and "k3" in err


# ---- 2. log-ratio clamp ----


def test_policy_loss_stays_finite_when_the_ratio_explodes():
    old = torch.zeros(2, 3)
    lp = torch.tensor([[100.0, 0.1, -0.1], [-90.0, 0.0, 0.0]], requires_grad=True)
    adv = torch.tensor([[1.0, 1.0, 1.0], [-1.0, -1.0, -1.0]])
    mask = torch.ones(2, 3)
    loss, metrics = ppo_policy_loss(lp, old, adv, mask, clip_eps=0.2)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(lp.grad).all()
    assert metrics["policy/log_ratio_clamped_frac"] == pytest.approx(2 / 6)
    # ordinary tokens keep their usual (unclamped) gradient
    loss_ref, _ = ppo_policy_loss(lp.detach()[:, 1:].clone().requires_grad_(), old[:, 1:], adv[:, 1:], mask[:, 1:])
    assert abs(metrics["policy/ratio_mean"]) < 1e9 and torch.isfinite(loss_ref)


# ---- 3. dropout off, training mode on ----


@pytest.fixture(scope="module")
def ds_group():
    from core.device import detect_device
    from core.engine import free_port, init_distributed

    device = detect_device("cpu", 1)
    init_distributed(0, 1, master_port=free_port(), device=device)
    return device


def _tiny_llama(dropout: float = 0.0, layers: int = 4):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=64, num_attention_heads=2, num_key_value_heads=1, head_dim=32,
                      num_hidden_layers=layers, intermediate_size=128, vocab_size=97, attention_dropout=dropout,
                      max_position_embeddings=128)
    return LlamaForCausalLM(cfg).train(False)  # as from_pretrained returns it


def _engine(model, ds_group, **engine_kw):
    from core.engine import build_engine
    from core.run import EngineConfig, OptimConfig

    return build_engine(model, OptimConfig(lr=1e-4), EngineConfig(device="cpu", num_threads=1, **engine_kw),
                        total_steps=1, world_size=1, device=ds_group)


def test_engine_disables_dropout_so_log_probs_do_not_depend_on_the_mode(ds_group):
    engine = _engine(_tiny_llama(dropout=0.5), ds_group)
    assert engine.module.training  # trainable engines come back in training mode
    ids = torch.randint(0, 97, (2, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a = engine(input_ids=ids).logits
        b = engine(input_ids=ids).logits
        engine.train(False)
        c = engine(input_ids=ids).logits
    assert torch.equal(a, b) and torch.allclose(a, c, atol=1e-6)
    assert engine.module.config.attention_dropout == 0.0


def _saved_activation_bytes(engine, ids) -> int:
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        engine(input_ids=ids).logits.sum()
    return total


def test_gradient_checkpointing_lowers_saved_activation_memory(ds_group):
    ids = torch.randint(0, 97, (4, 64), generator=torch.Generator().manual_seed(2))
    plain = _saved_activation_bytes(_engine(_tiny_llama(), ds_group), ids)
    ckpt = _saved_activation_bytes(_engine(_tiny_llama(), ds_group, gradient_checkpointing=True), ids)
    assert ckpt < 0.5 * plain, (ckpt, plain)


# ---- 4. end of response ----


@pytest.fixture(scope="module")
def eos_differs_model(tmp_path_factory) -> Path:
    """The tiny model with a base-model-style tokenizer: EOS is <|endoftext|>, the chat template ends turns with
    <|im_end|> (SmolLM2-1.7B base is like this)."""
    from transformers import AutoTokenizer, GenerationConfig

    from core.models import build_tiny_model

    out = tmp_path_factory.mktemp("eos-differs")
    build_tiny_model(out, seed=0)
    tok = AutoTokenizer.from_pretrained(out)
    tok.eos_token = "<|endoftext|>"
    tok.save_pretrained(out)
    gen = GenerationConfig.from_pretrained(out)
    gen.eos_token_id = tok.eos_token_id
    gen.save_pretrained(out)
    cfg = json.loads((out / "config.json").read_text())
    cfg["eos_token_id"] = tok.eos_token_id
    (out / "config.json").write_text(json.dumps(cfg))
    return out


def test_stop_tokens_include_the_end_of_turn_token(eos_differs_model):
    from transformers import AutoTokenizer, GenerationConfig

    from core.tokens import end_of_turn_token_id, stop_token_ids

    tok = AutoTokenizer.from_pretrained(eos_differs_model)
    im_end, eot = tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|endoftext|>")
    assert tok.eos_token_id == eot != im_end
    assert end_of_turn_token_id(tok) == im_end
    assert stop_token_ids(tok, GenerationConfig.from_pretrained(eos_differs_model)) == sorted({im_end, eot})


def _assert_stops_at_end_of_turn(gen, im_end: int) -> None:
    prompts = [[1, 5, 6, 7, 8]] * 24
    outs = gen.generate(prompts, list(range(24)), max_new_tokens=24, temperature=1.0)
    ended = [o for o in outs if im_end in o.response_ids]
    assert ended, "no sample produced <|im_end|>: pick other seeds"
    for o in ended:
        assert o.response_ids.index(im_end) == len(o.response_ids) - 1, "generation ran past the end of turn"
        assert o.finish_reason == "stop"


def test_hf_generator_stops_at_end_of_turn_when_eos_differs(eos_differs_model):
    from transformers import AutoTokenizer

    from rlvr.actors.generator import Generator

    im_end = AutoTokenizer.from_pretrained(eos_differs_model).convert_tokens_to_ids("<|im_end|>")
    _assert_stops_at_end_of_turn(Generator(str(eos_differs_model), backend="hf", max_model_len=64), im_end)


@pytest.mark.slow
def test_vllm_generator_stops_at_end_of_turn_when_eos_differs(eos_differs_model):
    from transformers import AutoTokenizer

    from rlvr.actors.generator import Generator, vllm_available

    if not vllm_available():
        pytest.skip("vllm is not installed")
    im_end = AutoTokenizer.from_pretrained(eos_differs_model).convert_tokens_to_ids("<|im_end|>")
    gen = Generator(str(eos_differs_model), backend="vllm", max_model_len=64, max_num_seqs=24)
    _assert_stops_at_end_of_turn(gen, im_end)


def test_sft_writes_the_end_of_turn_token_into_the_saved_generation_config(eos_differs_model, tmp_path):
    from transformers import AutoTokenizer

    from sft_dpo.sft import SFTConfig, train_sft

    cfg = SFTConfig.model_validate({
        "model": str(eos_differs_model), "output_dir": str(tmp_path / "sft"), "max_steps": 1, "logging": {"tensorboard": False},
        "data": {"path": "procedural:gsm8k_sft?n=8&seed=0", "max_length": 256},
        "engine": {"num_threads": 1, "device": "cpu"},
        "optim": {"lr": 1e-4, "per_device_batch_size": 2, "gradient_accumulation_steps": 1}})
    final = train_sft(cfg).model_dir
    im_end = AutoTokenizer.from_pretrained(eos_differs_model).convert_tokens_to_ids("<|im_end|>")
    eos = json.loads((final / "generation_config.json").read_text())["eos_token_id"]
    assert (eos[0] if isinstance(eos, list) else eos) == im_end
