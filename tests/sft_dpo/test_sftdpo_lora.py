"""SFT, DPO and the reward model with LoRA (lora.rank > 0) on the tiny model: SFT resumes exactly from an
adapter-only checkpoint, its final/ is the merged model (plain transformers loads it and generates the adapter
model's tokens) plus the adapter in final/adapter; DPO and the RM train with adapters and write merged final/
folders; a resume with other lora settings is refused."""

from __future__ import annotations

import pytest
import torch
from test_sftdpo_training import _dpo, _losses, _sft, pref_file, sft_file  # noqa: F401  (fixtures)
from transformers import AutoModelForCausalLM, AutoTokenizer

from core.checkpoint import ResumeError
from sft_dpo.dpo import train_dpo
from sft_dpo.reward_model import RMConfig, load_value_model, train_reward_model
from sft_dpo.sft import train_sft

LORA = {"rank": 8, "alpha": 16}


def test_sft_lora_resumes_exactly_and_writes_a_merged_final(tiny_model_dir, sft_file, tmp_path):  # noqa: F811
    full, split = tmp_path / "full", tmp_path / "split"
    kw = {"max_steps": 6, "lora": LORA, "optim": {"lr": 3e-2}}
    train_sft(_sft(tiny_model_dir, sft_file, full, **kw))
    train_sft(_sft(tiny_model_dir, sft_file, split, stop_after_steps=3, **kw))
    ckpt = split / "checkpoints" / "step_00000003"
    (states,) = (ckpt / "deepspeed").rglob("*model_states.pt")
    saved = torch.load(states, weights_only=False)["module"]
    assert saved and all(".lora_" in k for k in saved)  # the adapters only, no (tied) base weight
    with pytest.raises(ResumeError, match="lora"):
        train_sft(_sft(tiny_model_dir, sft_file, split, **{**kw, "lora": {"rank": 4}}))
    res = train_sft(_sft(tiny_model_dir, sft_file, split, **kw))
    a, b = _losses(full), _losses(split)
    assert sorted(b) == [1, 2, 3, 4, 5, 6]
    for s in (4, 5, 6):
        assert b[s]["loss"] == pytest.approx(a[s]["loss"], rel=1e-6, abs=1e-7)
        assert b[s]["grad_norm"] == pytest.approx(a[s]["grad_norm"], rel=1e-5)
    assert a[6]["loss"] < a[1]["loss"]
    # activation checkpointing (reentrant, frozen embeddings): the adapters still get their whole gradient
    ckpt_run = tmp_path / "checkpointed"
    train_sft(_sft(tiny_model_dir, sft_file, ckpt_run, **{**kw, "max_steps": 2},
                   engine={"gradient_checkpointing": True}))
    for s in (1, 2):
        assert _losses(ckpt_run)[s]["grad_norm"] == pytest.approx(a[s]["grad_norm"], rel=1e-4)

    from peft import PeftModel

    final = res.model_dir
    merged = AutoModelForCausalLM.from_pretrained(final, dtype=torch.float32)
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32),
                                        final / "adapter")
    tok = AutoTokenizer.from_pretrained(final)
    ids = tok.apply_chat_template([{"role": "user", "content": "What is 3 + 3?"}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)
    with torch.no_grad():
        torch.testing.assert_close(merged(**ids).logits, adapted(**ids).logits, rtol=0, atol=1e-5)
        gen = [m.generate(**ids, max_new_tokens=8, do_sample=False, pad_token_id=tok.pad_token_id)
               for m in (merged, adapted)]
    assert torch.equal(gen[0], gen[1])


def test_dpo_and_rm_with_lora_write_merged_finals(tiny_model_dir, pref_file, tmp_path):  # noqa: F811
    res = train_dpo(_dpo(tiny_model_dir, pref_file, tmp_path / "dpo", tmp_path / "cache", lora=LORA))
    assert (res.model_dir / "adapter" / "adapter_config.json").is_file()
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    dpo = AutoModelForCausalLM.from_pretrained(res.model_dir)
    changed = [k for k, v in dpo.state_dict().items() if not torch.equal(v, base.state_dict()[k])]
    assert changed and all("proj" in k for k in changed)  # only adapted layers moved, merged in
    rm = train_reward_model(RMConfig.model_validate({
        "model": str(tiny_model_dir), "output_dir": str(tmp_path / "rm"), "max_steps": 3, "lora": LORA,
        "engine": {"num_threads": 1}, "data": {"path": pref_file, "max_length": 64, "eval_fraction": 0.25},
        "optim": {"lr": 1e-3, "per_device_batch_size": 4, "lr_scheduler": "constant"}}))
    vm = load_value_model(str(rm.model_dir))  # a plain sequence-classification folder, head included
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        assert vm(ids).shape == (1, 4)
    assert (rm.model_dir / "adapter" / "adapter_config.json").is_file()
