"""core.model_factory on the tiny model: the plain build is what `from_pretrained` gives; with LoRA the merged
weights give the adapter model's logits, the adapter-disabled model is the base model, and `final/`-style saving
(merged weights + adapter) loads with plain transformers and with peft. The lora config section is typed."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from core.config import ConfigError, load_config
from core.model_factory import (
    adapter_disabled,
    build_model,
    has_lora,
    merged_state_dict,
    save_adapter,
    trainable_parameters,
    unwrap,
)
from core.run import LoraConfig
from sft_dpo.sft import SFTConfig

IDS = torch.tensor([[5, 6, 7, 8, 9, 10, 11, 12], [13, 14, 15, 16, 17, 18, 19, 20]])


def _lora_model(path, role="policy", rank=4, modules_to_save=()):
    torch.manual_seed(0)
    model = build_model(role, str(path), lora=LoraConfig(rank=rank, modules_to_save=modules_to_save))
    with torch.no_grad():  # peft starts B at 0 (the adapter a no-op): give it a real update to merge
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
            elif ".modules_to_save." in name:  # a fully trained copy (the final norm) that moved
                p.mul_(1.5)
    return model.train(False)


def test_plain_build_is_from_pretrained(tiny_model_dir):
    model = build_model("policy", str(tiny_model_dir))
    ref = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    assert not has_lora(model) and type(model) is type(ref)
    for (k, a), (k2, b) in zip(model.state_dict().items(), ref.state_dict().items()):
        assert k == k2 and torch.equal(a, b)
    frozen = build_model("reference", str(tiny_model_dir))
    assert not frozen.training and not any(p.requires_grad for p in frozen.parameters())
    with pytest.raises(ValueError, match="role"):
        build_model("actor", str(tiny_model_dir))
    with pytest.raises(ValueError, match="adapter disabled"):
        build_model("reference", str(tiny_model_dir), lora=LoraConfig(rank=4))


def test_merged_weights_give_the_adapter_models_logits(tiny_model_dir, tmp_path):
    model = _lora_model(tiny_model_dir, modules_to_save=("model.norm",))
    trained, total = trainable_parameters(model)
    assert 0 < trained < total / 10  # only the adapters train
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    merged = merged_state_dict(model)
    assert list(merged) == list(base.state_dict())  # the plain model's names, in its order
    with torch.no_grad():
        want = model(input_ids=IDS).logits
        with adapter_disabled(model):  # the reference of a LoRA run: the base model, exactly
            torch.testing.assert_close(model(input_ids=IDS).logits, base(input_ids=IDS).logits, rtol=0, atol=0)
        assert (want - base(input_ids=IDS).logits).abs().max() > 1e-2  # the adapter does change the model
        base.load_state_dict(merged)
        torch.testing.assert_close(base(input_ids=IDS).logits, want, rtol=0, atol=1e-5)
        # the training model is untouched by the merge
        torch.testing.assert_close(model(input_ids=IDS).logits, want, rtol=0, atol=0)

    out = tmp_path / "final"
    unwrap(model).save_pretrained(out, state_dict=merged, safe_serialization=True)
    save_adapter(model, out / "adapter")
    loaded = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    from peft import PeftModel

    with_adapter = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), out / "adapter")
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=IDS).logits, want, rtol=0, atol=1e-5)
        torch.testing.assert_close(with_adapter(input_ids=IDS).logits, want, rtol=0, atol=1e-5)


def test_value_model_with_lora_trains_its_head_and_merges(tiny_model_dir):
    model = _lora_model(tiny_model_dir, role="critic")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any("score" in n for n in trainable) and any("lora_A" in n for n in trainable)
    plain = build_model("critic", str(tiny_model_dir))
    merged = merged_state_dict(model)
    assert list(merged) == list(plain.state_dict())
    plain.load_state_dict(merged)
    with torch.no_grad():
        torch.testing.assert_close(plain(IDS), model(IDS), rtol=0, atol=1e-5)


def test_lora_config_section(tmp_path, tiny_model_dir):
    base = [f"model={tiny_model_dir}", f"output_dir={tmp_path}", "data.path=x.jsonl"]
    cfg = load_config(SFTConfig, None, [*base, "lora.rank=8", "lora.target_modules=[q_proj, v_proj]"])
    assert cfg.lora.enabled and cfg.lora.alpha == 16 and cfg.lora.target_modules == ("q_proj", "v_proj")
    assert not load_config(SFTConfig, None, base).lora.enabled  # rank 0: off, the default
    for bad, key in (("lora.rank=-1", "lora.rank"), ("lora.dropout=1.5", "lora.dropout"),
                     ("lora.ranks=8", "lora.ranks")):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            load_config(SFTConfig, None, [*base, bad])
    from rlvr.config import RLVRConfig

    rl = [f"model={tiny_model_dir}", f"output_dir={tmp_path}", "data.train=['procedural:keyword?n=8']"]
    assert load_config(RLVRConfig, None, [*rl, "lora.rank=8"]).lora.rank == 8  # shared by every stage
    with pytest.raises(ConfigError, match="lora.dropout"):  # RLVR trains with dropout off
        load_config(RLVRConfig, None, [*rl, "lora.rank=8", "lora.dropout=0.1"])
    with pytest.raises(ConfigError, match="zero_stage=3"):
        load_config(SFTConfig, None, [*base, "lora.rank=8", "engine.zero_stage=3"])
    with pytest.raises(ValueError, match="modules_to_save"):
        build_model("policy", str(tiny_model_dir), lora=LoraConfig(rank=4, modules_to_save=("ln_f",)))
    with pytest.raises(ValueError, match="target_modules"):
        build_model("policy", str(tiny_model_dir), lora=LoraConfig(rank=4, target_modules=("c_attn",)))
