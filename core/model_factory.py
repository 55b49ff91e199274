"""The one place training-side models are built: the policy, the frozen reference, the critic (value model) and
the reward model, for every stage (SFT, DPO, RM, the RLVR learners and the generators' reference scorer).

    build_model(role, path, dtype=..., device=..., lora=cfg.lora)

role       policy | reference  a causal LM (AutoModelForCausalLM)
           critic | reward     a per-token value model (core.value_model.ValueModel: a *ForSequenceClassification
                               backbone and its scalar head)
lora       None or rank 0: the plain model, as `from_pretrained` returns it. rank > 0 (a trained role only): peft's
           LoRA on `target_modules`, the base weights frozen; a value model also trains its head in full
           (peft's `modules_to_save`).

Dropout and gradient checkpointing are applied where the model is wrapped for training (core.engine.build_engine:
`keep_dropout`, engine.gradient_checkpointing); `build_model` takes them too, for models that are not wrapped.

LoRA models and the rest of the system:
  * the reference policy is the policy with its adapter off (`adapter_disabled`): no second copy of the weights;
  * whoever needs plain Hugging Face weights (the generators, `final/`) gets `merged_state_dict`: W + (alpha/r) B A
    per adapted layer, computed into new tensors, the training model untouched;
  * resume checkpoints hold the trainable tensors only (`trainable_only`), the base weights come from `model`.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Literal

import torch

from core.run import LoraConfig

Role = Literal["policy", "reference", "critic", "reward"]
ROLES = ("policy", "reference", "critic", "reward")


def build_model(role: Role, path: str, *, dtype: torch.dtype = torch.float32, device: str | torch.device | None = None,
                attn_implementation: str | None = None, gradient_checkpointing: bool = False,
                keep_dropout: bool = True, lora: LoraConfig | None = None) -> torch.nn.Module:
    """The model of `role` loaded from `path` (a Hugging Face folder or hub name); see the module docstring."""
    # lazy: `rlvr models list` imports core without transformers
    from transformers import AutoModelForCausalLM

    if role not in ROLES:
        raise ValueError(f"unknown model role {role!r}; use one of {', '.join(ROLES)}")
    kwargs = {"dtype": dtype}
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    if role in ("policy", "reference"):
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    else:
        from core.value_model import load_value_model  # lazy: see AutoModelForCausalLM above

        model = load_value_model(path, dtype=dtype, attn_implementation=attn_implementation)
    if lora is not None and lora.enabled:
        if role == "reference":
            raise ValueError("lora: the reference model is frozen; it is the policy with its adapter disabled")
        model = add_lora(model, lora, value_head=role in ("critic", "reward"))
    if not keep_dropout:
        from core.engine import disable_dropout  # lazy: core.engine imports DeepSpeed's helpers

        disable_dropout(model)
    if gradient_checkpointing:
        model.gradient_checkpointing_enable()
    if role == "reference":
        model.requires_grad_(False).train(False)
    if device is not None:
        model.to(device)
    return model


def add_lora(model: torch.nn.Module, lora: LoraConfig, *, value_head: bool = False) -> torch.nn.Module:
    """`model` with peft LoRA adapters on `lora.target_modules` (base weights frozen). A causal LM comes back as
    a peft model; a value model (core.value_model.ValueModel) is adapted in place (its `hf` becomes the peft
    model) and its scalar head trains in full."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    peft_cfg = PeftLoraConfig(r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                              target_modules=list(lora.target_modules),
                              task_type="SEQ_CLS" if value_head else "CAUSAL_LM",
                              modules_to_save=(["score"] if value_head else []) + list(lora.modules_to_save)
                              or None)
    inner = model.hf if value_head else model
    names = [name for name, _ in inner.named_modules()]
    missing = set(lora.target_modules) - {name.rsplit(".", 1)[-1] for name in names}
    if missing:
        raise ValueError(f"lora.target_modules: {sorted(missing)} name no layer of {type(inner).__name__}")
    missing = {m for m in lora.modules_to_save if not any(name.endswith(m) for name in names)}
    if missing:
        raise ValueError(f"lora.modules_to_save: {sorted(missing)} name no module of {type(inner).__name__}")
    peft_model = get_peft_model(inner, peft_cfg)
    # transformers checkpoints activations with reentrant autograd: with frozen embeddings no input needs a
    # gradient, and the adapters' gradients would be lost; make the embedding output require one
    base = peft_model.get_base_model()
    if hasattr(base, "enable_input_require_grads"):
        base.enable_input_require_grads()
    if value_head:
        model.hf = peft_model
        return model
    return peft_model


def peft_model_of(module: torch.nn.Module):
    """The peft model inside `module` (a peft model itself, or a ValueModel whose `hf` is one), else None."""
    from peft import PeftModel

    for candidate in (module, getattr(module, "hf", None)):
        if isinstance(candidate, PeftModel):
            return candidate
    return None


def has_lora(module: torch.nn.Module) -> bool:
    return peft_model_of(module) is not None


def unwrap(module: torch.nn.Module) -> torch.nn.Module:
    """The Hugging Face model to call `save_pretrained` on: the base model of a peft causal LM, else `module`."""
    peft_model = peft_model_of(module)
    return peft_model.get_base_model() if peft_model is module else module


@contextlib.contextmanager
def adapter_disabled(module: torch.nn.Module):
    """Within the block `module` computes as its base model (the frozen reference policy of a LoRA run)."""
    peft_model = peft_model_of(module)
    if peft_model is None:
        raise ValueError(f"{type(module).__name__} has no LoRA adapter to disable")
    with peft_model.disable_adapter():
        yield module


@torch.no_grad()
def merged_state_dict(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state dict of `module` with every LoRA adapter merged (W + (alpha/r) B A), under the keys of the plain
    model: what `from_pretrained` and the generators load. The merged weights are new tensors; the other tensors
    are the module's own (detached), as `state_dict()` gives them. A module without LoRA: its state dict."""
    from peft.tuners.lora import LoraLayer

    peft_model = peft_model_of(module)
    if peft_model is None:
        return {k: v.detach() for k, v in module.state_dict().items()}
    layers = {name: m for name, m in module.named_modules() if isinstance(m, LoraLayer)}
    out: dict[str, torch.Tensor] = {}
    for key, value in module.state_dict().items():
        if ".lora_" in key or ".original_module." in key:  # the adapter itself; the head's frozen original
            continue
        value = value.detach()
        if ".base_layer." in key:
            owner, name = key.split(".base_layer.", 1)
            if name == "weight":
                layer = layers[owner]
                for adapter in layer.active_adapters:
                    if adapter in layer.lora_A:
                        value = value + layer.get_delta_weight(adapter).to(value.dtype)
            key = f"{owner}.{name}"
        key = key.replace(".modules_to_save.default.", ".")
        out[key.replace("base_model.model.", "", 1)] = value
    return out


def trainable_state_dict(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The tensors that train (the adapters, and a value model's head), by their names in `module`."""
    names = {n for n, p in module.named_parameters() if p.requires_grad}
    return {k: v for k, v in module.state_dict().items() if k in names}


def adapter_only_checkpoints(engine) -> None:
    """Make `engine.save_checkpoint(..., exclude_frozen_parameters=True)` leave out every frozen tensor. DeepSpeed
    0.19 drops frozen parameters by their `named_parameters()` names, which skip tied duplicates: a tied output
    embedding (`lm_head.weight`, the whole embedding matrix) would stay in each adapter checkpoint."""
    frozen = {n for n, p in engine.module.named_parameters(remove_duplicate=False) if not p.requires_grad}
    module_state_dict = engine.module_state_dict

    def state_dict(*args, exclude_frozen_parameters: bool = False, **kwargs):
        sd = module_state_dict(*args, exclude_frozen_parameters=exclude_frozen_parameters, **kwargs)
        if exclude_frozen_parameters and sd is not None:
            for name in frozen:
                sd.pop(name, None)
        return sd

    engine.module_state_dict = state_dict


def save_adapter(module: torch.nn.Module, out: str | Path) -> None:
    """The adapter alone in peft's format (adapter_config.json + adapter_model.safetensors): `PeftModel
    .from_pretrained(base, out)` for peft users."""
    peft_model = peft_model_of(module)
    if peft_model is None:
        raise ValueError(f"{type(module).__name__} has no LoRA adapter to save")
    peft_model.save_pretrained(str(out), safe_serialization=True)


def trainable_parameters(module: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts (ZeRO-3 partitions: the full sizes)."""
    def numel(p):
        return getattr(p, "ds_numel", None) or p.numel()

    params = list(module.parameters())
    return sum(numel(p) for p in params if p.requires_grad), sum(numel(p) for p in params)
