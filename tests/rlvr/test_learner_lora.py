"""The learner with LoRA (lora.rank > 0), without Ray: the reference is the policy with its adapter disabled (no
reference engine) and scores as the base model; an update moves the adapters only; the weights sent to the
generators (`full_state_dict`, `weight_spec`) are the merged plain model, giving the adapter model's log-probs;
a checkpoint holds the trainable tensors only and a learner restored from it continues exactly; `save_hf` writes
the merged model plus the adapter. PPO's critic with LoRA trains its adapters and its head, nothing else."""

from __future__ import annotations

import torch
from rlvr_core_helpers import REPO
from transformers import AutoModelForCausalLM

from core.config import config_to_dict, load_config
from core.engine import free_port
from rlvr.actors.learner import Learner
from rlvr.config import RLVRConfig

PROMPTS = [[5, 6, 7, 8], [5, 6, 7, 8], [11, 12, 13], [11, 12, 13]]
RESPONSES = [[20, 21, 22], [23, 24, 25, 26, 27], [28], [29, 30]]
ADV = torch.tensor([[1.0, 1, 1, 0, 0], [-1, -1, -1, -1, -1], [0.5, 0, 0, 0, 0], [-0.5, -0.5, 0, 0, 0]])


def _learner(tiny_model_dir, tmp_path, name="tiny_grpo.yaml") -> Learner:
    cfg = load_config(RLVRConfig, REPO / "configs" / "rlvr" / name, [
        f"model={tiny_model_dir}", f"output_dir={tmp_path / 'out'}", "rollout.prompts_per_step=2",
        "rollout.samples_per_prompt=2", "ppo.num_mini_batches=1", "optim.per_device_batch_size=2",
        "optim.lr=1e-2", "ppo.kl_coef=0.5", "lora.rank=4"])
    return Learner(config_to_dict(cfg), 0, 1, "127.0.0.1", free_port())


def _samples():
    return [{"prompt_ids": p, "response_ids": r, "logprobs": None} for p, r in zip(PROMPTS, RESPONSES)]


def _logprobs(model, samples) -> torch.Tensor:
    rows = []
    for s in samples:
        ids = torch.tensor([s["prompt_ids"] + s["response_ids"]])
        logits = model(input_ids=ids).logits[0, len(s["prompt_ids"]) - 1:-1].float()
        lp = torch.log_softmax(logits, -1).gather(-1, torch.tensor(s["response_ids"])[:, None])[:, 0]
        rows.append(torch.nn.functional.pad(lp, (0, 5 - len(lp))))
    return torch.stack(rows)


def _lora_params(learner) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in learner.policy.module.named_parameters() if p.requires_grad}


@torch.no_grad()
def test_lora_learner_reference_update_sync_and_exact_resume(tiny_model_dir, tmp_path):
    learner = _learner(tiny_model_dir, tmp_path)
    assert learner.lora and learner.ref is None  # no second copy of the weights
    module = learner.policy.module
    for name, p in module.named_parameters():  # an adapter that already changes the model
        if "lora_B" in name:
            p.normal_(0, 0.05)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    samples = _samples()
    base_lp = _logprobs(base, samples)
    frozen = {n: p.detach().clone() for n, p in module.named_parameters() if not p.requires_grad}

    prep = learner.prepare(samples)  # temperature 1 in tiny_grpo.yaml
    torch.testing.assert_close(prep["ref_logprobs"], base_lp * prep["mask"], rtol=0, atol=1e-5)
    policy_lp = torch.tensor([learner.sequence_logprobs(s["prompt_ids"], s["response_ids"]) + [0.0] *
                              (5 - len(s["response_ids"])) for s in samples])
    assert (policy_lp - base_lp).abs().max() > 1e-3  # the adapter is on outside the reference pass

    # the generators' weights: the merged plain model, with the adapter model's log-probs
    sd = learner.full_state_dict()
    assert list(sd) == list(base.state_dict()) and [k for k, _, _ in learner.weight_spec()] == list(sd)
    assert all(list(sd[k].shape) == shape for k, _, shape in learner.weight_spec())
    base.load_state_dict(sd)
    torch.testing.assert_close(_logprobs(base, samples), policy_lp, rtol=0, atol=1e-5)

    with torch.enable_grad():
        learner.update(1, ADV[:, : prep["mask"].shape[1]] * prep["mask"])
    for n, p in module.named_parameters():
        if not p.requires_grad:
            assert torch.equal(p, frozen[n]), f"{n}: a frozen base weight moved"
    after_one = _lora_params(learner)

    # checkpoint: the adapters and their optimiser state only; a fresh learner restored from it continues exactly
    ckpt = tmp_path / "ckpt"
    learner.save(str(ckpt), step=1, write_hf=False)
    (states,) = (ckpt / "policy").rglob("*model_states.pt")
    saved = torch.load(states, weights_only=False)["module"]
    assert saved and all(".lora_" in k for k in saved)  # no base weight in it, tied ones included
    restored = _learner(tiny_model_dir, tmp_path / "again")
    assert restored.load(str(ckpt)) == 1
    for n, p in _lora_params(restored).items():
        assert torch.equal(p, after_one[n])
    outs = []
    for each in (learner, restored):
        prep = each.prepare(samples)
        with torch.enable_grad():
            outs.append(each.update(2, ADV[:, : prep["mask"].shape[1]] * prep["mask"]))
    assert outs[0]["policy/loss"] == outs[1]["policy/loss"]
    assert outs[0]["policy/grad_norm"] == outs[1]["policy/grad_norm"]
    for n, p in _lora_params(restored).items():
        assert torch.equal(p, _lora_params(learner)[n]), f"{n} differs after the resumed step"

    # final/: the merged model that transformers loads, and the adapter alone
    learner.save_hf(str(tmp_path / "final"))
    assert (tmp_path / "final" / "adapter" / "adapter_config.json").is_file()
    final = AutoModelForCausalLM.from_pretrained(tmp_path / "final", dtype=torch.float32)
    want = torch.tensor([learner.sequence_logprobs(s["prompt_ids"], s["response_ids"]) + [0.0] *
                         (5 - len(s["response_ids"])) for s in samples])
    torch.testing.assert_close(_logprobs(final, samples), want, rtol=0, atol=1e-5)


def test_ppo_critic_with_lora_trains_adapters_and_head_only(tiny_model_dir, tmp_path):
    learner = _learner(tiny_model_dir, tmp_path, "tiny_ppo.yaml")
    value = learner.value.module
    trained = {n for n, p in value.named_parameters() if p.requires_grad}
    assert trained and all(".lora_" in n or ".score." in n for n in trained)
    frozen = {n: p.detach().clone() for n, p in value.named_parameters() if not p.requires_grad}
    head = {n: p.detach().clone() for n, p in value.named_parameters() if n in trained and ".score." in n}
    prep = learner.prepare(_samples())
    out = learner.update(1, ADV[:, : prep["mask"].shape[1]] * prep["mask"], returns=torch.ones_like(prep["mask"]))
    assert out["value/grad_norm"] > 0
    for n, p in value.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n]), f"{n}: a frozen critic weight moved"
        elif n in head:
            assert not torch.equal(p, head[n]), f"{n}: the value head did not train"
    learner.save(str(tmp_path / "ckpt"), step=1, write_hf=False)
    (states,) = (tmp_path / "ckpt" / "value").rglob("*model_states.pt")
    assert all(".lora_" in k or ".score." in k for k in torch.load(states, weights_only=False)["module"])

