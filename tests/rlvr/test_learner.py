"""The learner without Ray: a plain `Learner` at world size 1 on gloo. One PPO, one GRPO and one asynchronous-rollout
step on the tiny model, each compared with the same step done by hand from the pure functions (rlvr.algorithms) on
the same batch, in one piece (the learner cuts it into micro-batches by length): the log-probs and values
`prepare` returns (and the forwards it leaves out), the loss, the gradient norm, the weights after the optimiser
step (AdamW after clipping to optim.max_grad_norm, as DeepSpeed does), and the FLOPs it counts."""

from __future__ import annotations

import pytest
import torch
from rlvr_core_helpers import REPO
from transformers import AutoModelForCausalLM

from core.config import config_to_dict, load_config
from core.engine import free_port
from rlvr.actors.generator import Generator, Rollout
from rlvr.actors.learner import Learner
from rlvr.actors.perf import flop_model
from rlvr.algorithms import (
    compute_advantages,
    compute_gae,
    group_advantages,
    kl_estimate,
    masked_whiten,
    ppo_policy_loss,
    sequence_rewards,
    shape_token_rewards,
    value_loss,
)
from rlvr.config import RLVRConfig
from sft_dpo.reward_model import load_value_model

TEMPERATURE = 0.7
PROMPTS = [[5, 6, 7, 8], [5, 6, 7, 8], [11, 12, 13], [11, 12, 13]]  # two groups of two samples, as GRPO draws them
RESPONSES = [[20, 21, 22], [23, 24, 25, 26, 27], [28], [29, 30]]
SCORES = torch.tensor([1.0, 0.0, 0.5, 1.0])
FINISHED = torch.tensor([True, True, False, True])


def _config(tiny_model_dir, tmp_path, name: str, *extra: str) -> RLVRConfig:
    # 4 samples, one mini-batch of 2 micro-batches of 2: the learner accumulates, the reference does not;
    # clipping at 0.5 is active (the by-hand step clips as DeepSpeed does)
    return load_config(RLVRConfig, REPO / "configs" / "rlvr" / name, [
        f"model={tiny_model_dir}", f"output_dir={tmp_path / 'out'}", "rollout.prompts_per_step=2",
        "rollout.samples_per_prompt=2", f"rollout.temperature={TEMPERATURE}", "ppo.num_mini_batches=1",
        "optim.per_device_batch_size=2", "optim.lr=1e-2", "optim.eps=1.0", "optim.max_grad_norm=0.5", *extra])


def _samples(vocab: int) -> list[dict]:
    return [{"prompt_ids": [t % vocab for t in p], "response_ids": [t % vocab for t in r], "logprobs": None}
            for p, r in zip(PROMPTS, RESPONSES)]


def _padded(rows: list[torch.Tensor]) -> torch.Tensor:
    width = max(len(r) for r in rows)
    return torch.stack([torch.nn.functional.pad(r, (0, width - len(r))) for r in rows])


def _response_logprobs(model, samples) -> torch.Tensor:
    """[B, T] log-probs of each response token at the sampling temperature, one sequence at a time."""
    rows = []
    for s in samples:
        ids = torch.tensor([s["prompt_ids"] + s["response_ids"]])
        logits = model(input_ids=ids).logits[0, len(s["prompt_ids"]) - 1:-1].float() / TEMPERATURE
        rows.append(torch.log_softmax(logits, -1).gather(-1, torch.tensor(s["response_ids"])[:, None])[:, 0])
    return _padded(rows)


def _response_values(value_model, samples) -> torch.Tensor:
    rows = []
    for s in samples:
        ids = torch.tensor([s["prompt_ids"] + s["response_ids"]])
        rows.append(value_model(ids)[0, len(s["prompt_ids"]) - 1:-1].float())
    return _padded(rows)


def _adamw_step(model, loss, optim) -> float:
    """Backward, the gradient norm, clipping as DeepSpeed does (max_norm / (norm + 1e-6)), one AdamW step with the
    learner's parameter groups (core.engine.build_engine). Returns the pre-clipping norm."""
    loss.backward()
    params = [p for p in model.parameters() if p.requires_grad]
    norm = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params
                                                       if p.grad is not None])))
    coef = optim.max_grad_norm / (norm + 1e-6)
    if coef < 1:
        for p in params:
            if p.grad is not None:
                p.grad.mul_(coef)
    opt = torch.optim.AdamW([{"params": [p for p in params if p.ndim >= 2], "weight_decay": optim.weight_decay},
                             {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}],
                            lr=optim.lr, betas=optim.betas, eps=optim.eps)
    opt.step()
    return norm


def _assert_same_weights(trained: torch.nn.Module, by_hand: torch.nn.Module, before: dict[str, torch.Tensor]):
    """The same update. AdamW's first step moves a weight by lr * g / (|g| + eps); with eps = 1 (the config above)
    that is close to lr * g, so the weights compare the gradients themselves, element by element."""
    moved = 0.0
    for (name, a), (_, b) in zip(trained.named_parameters(), by_hand.named_parameters()):
        torch.testing.assert_close(a.detach() - before[name], b.detach() - before[name], atol=1e-8, rtol=1e-3,
                                   msg=lambda m, name=name: f"{name}: {m}")
        moved += float((a.detach() - before[name]).abs().sum())
    assert moved > 0


@pytest.fixture
def learner_factory(tiny_model_dir, tmp_path):
    def make(name: str, *extra: str) -> tuple[Learner, RLVRConfig]:
        cfg = _config(tiny_model_dir, tmp_path, name, *extra)
        return Learner(config_to_dict(cfg), 0, 1, "127.0.0.1", free_port()), cfg

    return make


def test_ppo_update_matches_the_pure_functions_by_hand(learner_factory, tiny_model_dir):
    learner, cfg = learner_factory("tiny_ppo.yaml")
    assert cfg.advantage_estimator == "gae" and cfg.kl_in_reward
    samples = _samples(learner.policy.module.config.vocab_size)
    policy = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    critic = load_value_model(str(tiny_model_dir))
    critic.load_state_dict(learner.value.module.state_dict())  # the learner's fresh, seeded value head
    before = {k: v.detach().clone() for k, v in learner.policy.module.named_parameters()}
    critic_before = {k: v.detach().clone() for k, v in learner.value.module.named_parameters()}

    assert learner.old_logprobs_source == "recompute"  # the KL is in the reward: the advantages need them
    prep = learner.prepare(samples)
    old_lp, values = _response_logprobs(policy, samples).detach(), _response_values(critic, samples).detach()
    mask = _padded([torch.ones(len(r)) for r in RESPONSES])
    torch.testing.assert_close(prep["mask"], mask)
    torch.testing.assert_close(prep["logprobs"], old_lp * mask, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(prep["ref_logprobs"], old_lp * mask, atol=1e-5, rtol=1e-5)  # reference = start
    torch.testing.assert_close(prep["values"], values * mask, atol=1e-5, rtol=1e-5)

    # advantages: token rewards (score x 10, -10 when cut off, -beta * k1 KL per token) -> GAE -> whitening
    batch = {**{k: prep[k] for k in ("mask", "logprobs", "ref_logprobs", "values")}, "scores": SCORES,
             "finished": FINISHED}
    adv, returns, metrics = compute_advantages(cfg.advantage_estimator, batch, cfg.advantage_params())
    kl = kl_estimate(old_lp, old_lp, "k1") * mask
    rewards, _ = shape_token_rewards(SCORES, FINISHED, kl, mask, kl_coef=cfg.ppo.kl_coef)
    want_adv, want_ret = compute_gae(rewards, values, mask, gamma=cfg.ppo.gamma, lam=cfg.ppo.lam)
    torch.testing.assert_close(adv, masked_whiten(want_adv, mask), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(returns, want_ret, atol=1e-5, rtol=1e-5)
    assert metrics["reward/shaped_mean"] == pytest.approx(sequence_rewards(SCORES, FINISHED).mean().item())

    out = learner.update(1, adv, returns)

    # the policy: the clipped surrogate over the whole batch, normalised by its token count
    loss, _ = ppo_policy_loss(_response_logprobs(policy, samples), old_lp, adv, mask, clip_eps=cfg.ppo.clip_eps,
                              num_tokens=mask.sum())
    norm = _adamw_step(policy, loss, cfg.optim)
    assert out["policy/loss"] == pytest.approx(loss.item(), rel=1e-4, abs=1e-6)
    assert out["policy/grad_norm"] == pytest.approx(norm, rel=1e-4) and norm > cfg.optim.max_grad_norm  # clipped
    _assert_same_weights(learner.policy.module, policy, before)
    # the critic: clipped value loss against the GAE returns
    vloss, _ = value_loss(_response_values(critic, samples), values, returns, mask, clip_eps=cfg.ppo.value_clip_eps,
                          num_tokens=mask.sum())
    vnorm = _adamw_step(critic, vloss, cfg.optim)
    assert out["value/loss"] == pytest.approx(vloss.item(), rel=1e-4)
    assert out["value/grad_norm"] == pytest.approx(vnorm, rel=1e-4) and vnorm > cfg.optim.max_grad_norm
    _assert_same_weights(learner.value.module, critic, critic_before)


def test_grpo_update_matches_the_pure_functions_by_hand(learner_factory, tiny_model_dir):
    learner, cfg = learner_factory("tiny_grpo.yaml", "ppo.kl_coef=0.5")
    assert cfg.advantage_estimator == "grpo" and not cfg.kl_in_reward and learner.value is None
    samples = _samples(learner.policy.module.config.vocab_size)
    policy = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    reference = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).requires_grad_(False)
    before = {k: v.detach().clone() for k, v in learner.policy.module.named_parameters()}

    # one update on the batch and the KL in the loss: prepare runs the reference only, the update's own
    # log-probs (detached) are the old ones
    assert learner.old_logprobs_source == "current"
    prep = learner.prepare(samples)
    assert prep["values"] is None and prep["logprobs"] is None
    mask = prep["mask"]
    ref_lp = _response_logprobs(reference, samples).detach()
    torch.testing.assert_close(prep["ref_logprobs"], ref_lp * mask, atol=1e-5, rtol=1e-5)
    batch = {**{k: prep[k] for k in ("mask", "logprobs", "ref_logprobs")}, "scores": SCORES, "finished": FINISHED}
    adv, returns, metrics = compute_advantages("grpo", batch, cfg.advantage_params())
    assert returns is None and "kl/token_mean" not in metrics  # the learner reports the KL (sum/kl)
    seq = group_advantages(sequence_rewards(SCORES, FINISHED), 2)  # groups: samples (0, 1) and (2, 3)
    torch.testing.assert_close(adv, seq[:, None] * mask)

    out = learner.update(1, adv)

    # the clipped surrogate plus beta * k3 KL to the reference in the loss (the GRPO paper's form)
    lp = _response_logprobs(policy, samples)
    old_lp = lp.detach()
    loss, _ = ppo_policy_loss(lp, old_lp, adv, mask, clip_eps=cfg.ppo.clip_eps, num_tokens=mask.sum())
    kl = kl_estimate(lp, ref_lp, "k3")
    assert out["sum/kl"] == pytest.approx((kl * mask).sum().item(), rel=1e-4, abs=1e-7)
    loss = loss + cfg.ppo.kl_coef * (kl * mask).sum() / mask.sum()
    norm = _adamw_step(policy, loss, cfg.optim)
    assert out["policy/loss"] == pytest.approx(loss.item(), rel=1e-4, abs=1e-6)
    assert out["policy/grad_norm"] == pytest.approx(norm, rel=1e-4)
    assert out["policy/ratio_mean"] == 1.0 and out["policy/clipfrac"] == 0.0  # old = current, exactly
    _assert_same_weights(learner.policy.module, policy, before)
    # useful FLOPs: one reference forward, one policy forward + backward (3 forwards), on the real tokens only,
    # each micro-batch (one group) computing its prompt once
    fm = flop_model(policy)
    lengths = [len(p) + len(r) for p, r in zip(PROMPTS, RESPONSES)]
    want = fm.forward(lengths, int(mask.sum())) - fm.prompt_copies([4, 3])
    assert out["sum/flops"] == pytest.approx(4 * want)
    assert out["sum/learner_compute_s"] > 0 and out["memory/learner_peak_rss_gib"] > 0.05


def test_asynchronous_rollouts_use_the_generators_logprobs_as_the_old_policy(learner_factory, tiny_model_dir):
    """rollout.async_steps > 0: no policy forward in prepare; the PPO ratio is taken against the behaviour
    policy's log-probs the generator reported (here a policy a little away from the learner's)."""
    learner, cfg = learner_factory("tiny_grpo.yaml", "ppo.kl_coef=0", "rollout.async_steps=1")
    assert learner.old_logprobs_source == "behaviour" and learner.ref is None
    samples = _samples(learner.policy.module.config.vocab_size)
    policy = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    lp_now = _response_logprobs(policy, samples).detach()
    offset = torch.tensor([-0.3, 0.3, 0.05, 0.0])[:, None]  # the behaviour policy: rows 0 and 1 clip
    for i, s in enumerate(samples):
        s["logprobs"] = (lp_now[i, : len(RESPONSES[i])] + offset[i]).tolist()
    missing = [dict(s, logprobs=None) for s in samples]
    with pytest.raises(ValueError, match="generator log-probs"):
        learner.prepare(missing)
    before = {k: v.detach().clone() for k, v in learner.policy.module.named_parameters()}
    prep = learner.prepare(samples)
    mask = prep["mask"]
    behaviour = (lp_now + offset) * mask
    torch.testing.assert_close(prep["logprobs"], behaviour, atol=1e-6, rtol=0)
    assert prep["ref_logprobs"] is None
    adv = group_advantages(sequence_rewards(SCORES, FINISHED), 2)[:, None] * mask
    out = learner.update(1, adv)
    loss, metrics = ppo_policy_loss(_response_logprobs(policy, samples), behaviour, adv, mask,
                                    clip_eps=cfg.ppo.clip_eps, num_tokens=mask.sum())
    assert metrics["policy/clipfrac"] > 0
    norm = _adamw_step(policy, loss, cfg.optim)
    assert out["policy/loss"] == pytest.approx(loss.item(), rel=1e-4, abs=1e-6)
    assert out["policy/grad_norm"] == pytest.approx(norm, rel=1e-4)
    assert out["policy/clipfrac"] == pytest.approx(metrics["policy/clipfrac"], abs=1e-6)
    _assert_same_weights(learner.policy.module, policy, before)
    # the generator gap is measured on the update's own log-probs: |offset| per sample
    assert out["sum/gap"] / out["sum/gap_rows"] == pytest.approx(offset.abs().mean().item(), abs=1e-5)


def test_reference_scored_on_the_generators_gives_the_learners_update(learner_factory, tiny_model_dir):
    """ppo.reference_on_generators: a generator's reference scorer gives the reference log-probs the learner's own
    reference engine gives; a learner fed them holds no reference model and makes the same update; a sample
    without them is an error naming it."""
    own, _ = learner_factory("tiny_grpo.yaml", "ppo.kl_coef=0.5")
    fed, cfg = learner_factory("tiny_grpo.yaml", "ppo.kl_coef=0.5", "ppo.reference_on_generators=true")
    assert own.ref is not None and fed.ref is None and cfg.reference_micro_batch_size == 2
    samples = _samples(own.policy.module.config.vocab_size)
    generator = Generator(str(tiny_model_dir), backend="hf", dtype="float32",
                          reference_micro_batch_size=cfg.reference_micro_batch_size)
    rollouts = [Rollout(s["response_ids"], [0.0] * len(s["response_ids"]), "stop") for s in samples]
    scored = generator.score_reference([s["prompt_ids"] for s in samples], rollouts, TEMPERATURE)
    assert [len(x) for x in scored] == [len(r) for r in RESPONSES]

    with pytest.raises(ValueError, match="sample 0 has 0 reference log-probs"):
        fed.prepare(samples)
    for step in (1, 2):  # step 2: the policy has moved, so the KL term is not zero
        prep_own = own.prepare(samples)
        prep_fed = fed.prepare([dict(s, ref_logprobs=lp) for s, lp in zip(samples, scored)])
        torch.testing.assert_close(prep_fed["ref_logprobs"], prep_own["ref_logprobs"], atol=1e-5, rtol=1e-5)
        adv = group_advantages(sequence_rewards(SCORES, FINISHED), 2)[:, None] * prep_own["mask"]
        out_own, out_fed = own.update(step, adv), fed.update(step, adv)
        for key in ("policy/loss", "policy/grad_norm", "sum/kl"):
            assert out_fed[key] == pytest.approx(out_own[key], rel=1e-4, abs=1e-7), (step, key)
    assert out_own["sum/kl"] > 1e-6
