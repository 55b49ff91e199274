"""Advantages, in one place: `compute_advantages(algorithm, batch, params)` is the only path from a scored rollout
batch to the advantages (and, with a critic, the returns) that the learners train on.

It does, for every algorithm: reward shaping (verified reward x score; the no-EOS penalty replaces the reward of a
response cut off without a stop token; rlvr.algorithms.rewards), the per-token KL(policy || reference) and, where
configured, the KL penalty in the reward, DAPO's soft overlong punishment (rewards.overlong_buffer); then the
estimator the config names (ppo.advantage_estimator, or the algorithm's):
    gae     PPO with a critic: token rewards (sequence reward on the last token, -beta*KL on every token), GAE,
            and whitening over the whole batch (every rank's samples: the driver holds the full batch)
    grpo    group-normalised sequence rewards (r - mean) / std over each prompt's samples (no critic; without the
            std, Dr. GRPO)
    rloo    leave-one-out baseline r_i - mean_{j != i} r_j (no critic)
    reinforce_pp           REINFORCE++ (Hu et al. 2025, arXiv 2501.03262): the token rewards of gae, returns
                           G_t = sum_{s >= t} gamma^(s-t) r_s without a critic, whitened over the whole batch
    reinforce_pp_baseline  REINFORCE++ with the group-mean baseline: r_i - mean of its group (minus beta * its KL
                           when the KL is in the reward) on every token, whitened over the whole batch

The batch is a dict of tensors, B sequences, T response tokens (right-padded):
    scores [B] float (verifier scores in [0, 1]), finished [B] bool (ended with a stop token),
    mask [B, T] (1 on real response tokens), logprobs [B, T] and ref_logprobs [B, T] (at the sampling temperature,
    rlvr.actors.learner.Learner.prepare), values [B, T] (the critic's, gae only).
logprobs may be None when the KL is not in the reward (the learner's first update computes the policy's log-probs
and reports the KL metrics itself); ref_logprobs is None without a reference (kl_coef 0: the KL is 0).
Samples of one prompt are contiguous (group_size of them) for grpo/rloo.

Each estimator in ADVANTAGE_ESTIMATORS takes (batch, params) and returns (advantages [B, T], returns [B, T] or None,
metrics); verl's core_algos is the model (pure, registered by name, shapes in the docstring).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlvr.algorithms.kl import kl_estimate
from rlvr.algorithms.logprobs import masked_mean, masked_whiten
from rlvr.algorithms.rewards import overlong_penalty, sequence_rewards, shape_token_rewards

Tensor = torch.Tensor


@dataclass(frozen=True)
class AdvantageParams:
    """The knobs of compute_advantages (rlvr.config.RLVRConfig.advantage_params fills them from the config)."""

    group_size: int = 1  # samples per prompt (grpo/rloo groups)
    verified_reward: float = 10.0
    no_eos_penalty: float | None = -10.0
    kl_coef: float = 0.05
    kl_in_reward: bool = True  # gae: -beta*KL per token; grpo/rloo: -beta*sum KL on the sequence reward
    kl_estimator: str = "k1"
    gamma: float = 1.0
    lam: float = 0.95
    whiten: bool = True  # gae only
    std_normalize: bool = True  # grpo only (False: Dr. GRPO)
    max_response_len: int = 0  # rollout.max_new_tokens: where the overlong buffer ends
    overlong_buffer: int = 0  # DAPO's soft overlong punishment over the last N tokens (0: off)
    overlong_penalty: float = 0.0  # the punishment at the cap, in reward units


def compute_gae(token_rewards: Tensor, values: Tensor, mask: Tensor, *, gamma: float = 1.0,
                lam: float = 0.95) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation over right-padded responses.

    token_rewards, values, mask: [B, T] -> (advantages [B, T], returns [B, T]), both 0 on padding.
    delta_t = r_t + gamma * V_{t+1} - V_t (V beyond the last real token is 0: the episode ends there);
    A_t = delta_t + gamma * lam * A_{t+1}; returns = A + V."""
    mask = mask.to(values.dtype)
    values = values * mask
    rewards = token_rewards * mask
    B, T = rewards.shape
    advantages = torch.zeros_like(rewards)
    next_adv = torch.zeros(B, dtype=rewards.dtype, device=rewards.device)
    next_value = torch.zeros(B, dtype=rewards.dtype, device=rewards.device)
    for t in reversed(range(T)):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        adv = delta + gamma * lam * next_adv
        # On padding keep the carried values so a token's successor is the next *real* token (none: 0).
        m = mask[:, t]
        advantages[:, t] = adv * m
        next_adv = adv * m + next_adv * (1 - m)
        next_value = values[:, t] * m + next_value * (1 - m)
    returns = (advantages + values) * mask
    return advantages, returns


def group_advantages(seq_rewards: Tensor, group_size: int, *, estimator: str = "grpo",
                     std_normalize: bool = True, eps: float = 1e-6) -> Tensor:
    """Group-relative advantages. seq_rewards [B] with B = prompts * group_size, each prompt's samples contiguous.

    grpo: (r - mean_group) / (std_group + eps) (unbiased std; `std_normalize=False` keeps r - mean, as Dr. GRPO).
    rloo: r_i - mean_{j != i} r_j, the leave-one-out baseline (never divided by std). Returns [B]."""
    if group_size < 1 or seq_rewards.numel() % group_size:
        raise ValueError(f"{seq_rewards.numel()} rewards do not split into groups of {group_size}")
    r = seq_rewards.float().view(-1, group_size)
    mean = r.mean(1, keepdim=True)
    if estimator == "grpo":
        adv = r - mean
        if std_normalize and group_size > 1:
            adv = adv / (r.std(1, keepdim=True) + eps)
    elif estimator == "rloo":
        if group_size < 2:
            raise ValueError("rloo needs at least 2 samples per prompt")
        adv = (r - mean) * group_size / (group_size - 1)
    else:
        raise ValueError(f"unknown group estimator {estimator!r}; use grpo or rloo")
    return adv.view(-1)


def _shaping(batch: dict[str, Tensor], params: AdvantageParams) -> tuple[Tensor, Tensor, dict[str, float]]:
    """The shaped sequence reward [B] (with the overlong penalty) and the per-token KL [B, T] (0 on padding), with
    their metrics."""
    mask = batch["mask"].float()
    seq = sequence_rewards(batch["scores"], batch["finished"], verified_reward=params.verified_reward,
                           no_eos_penalty=params.no_eos_penalty)
    metrics = {"reward/no_eos_fraction": (~batch["finished"].bool()).float().mean().item()}
    if params.overlong_buffer > 0:
        penalty = overlong_penalty(mask.sum(1), max_len=params.max_response_len, buffer=params.overlong_buffer,
                                   penalty=params.overlong_penalty)
        seq = seq + penalty
        metrics.update({"reward/overlong_penalty_mean": penalty.mean().item(),
                        "reward/overlong_penalised_fraction": (penalty < 0).float().mean().item()})
    metrics["reward/shaped_mean"] = seq.mean().item()
    if batch.get("logprobs") is None or batch.get("ref_logprobs") is None:
        if params.kl_in_reward and params.kl_coef > 0:
            raise ValueError("the KL penalty in the reward needs the policy's and the reference's log-probs "
                             "(batch['logprobs'], batch['ref_logprobs'])")
        # no reference (kl_coef 0): KL 0; no old log-probs (the learner's first update computes them): the
        # learner reports the KL of its own log-probs
        kl = torch.zeros_like(mask)
        if batch.get("ref_logprobs") is not None:
            return seq, kl, metrics
    else:
        kl = kl_estimate(batch["logprobs"], batch["ref_logprobs"], params.kl_estimator) * mask
    metrics.update({"kl/sequence_mean": kl.sum(1).mean().item(), "kl/token_mean": masked_mean(kl, mask).item()})
    return seq, kl, metrics


def _token_rewards(batch: dict[str, Tensor], params: AdvantageParams
                   ) -> tuple[Tensor, Tensor, dict[str, float]]:
    """Token rewards [B, T] (shaped sequence reward on the last token, -beta*KL per token when the KL is in the
    reward), the mask [B, T] and the metrics: what gae and reinforce_pp start from."""
    mask = batch["mask"].float()
    seq, kl, metrics = _shaping(batch, params)
    kl_for_reward = kl if params.kl_in_reward else torch.zeros_like(kl)
    rewards, shaped = shape_token_rewards(batch["scores"], batch["finished"], kl_for_reward, mask,
                                          kl_coef=params.kl_coef, sequence_reward=seq)
    shaped.pop("kl/sequence_mean")  # of the KL in the reward (0 when it is in the loss); _shaping's is the KL
    return rewards, mask, {**shaped, **metrics}


def gae_advantages(batch: dict[str, Tensor], params: AdvantageParams
                   ) -> tuple[Tensor, Tensor, dict[str, float]]:
    """PPO: token rewards + GAE on the critic's values, whitened over the batch. -> ([B, T], [B, T], metrics)."""
    if "values" not in batch:
        raise ValueError("the gae estimator needs the critic's values (batch['values']); algorithm ppo has them")
    rewards, mask, metrics = _token_rewards(batch, params)
    advantages, returns = compute_gae(rewards, batch["values"].float(), mask, gamma=params.gamma, lam=params.lam)
    if params.whiten:
        advantages = masked_whiten(advantages, mask)
    return advantages, returns, metrics


def reinforce_pp_advantages(batch: dict[str, Tensor], params: AdvantageParams
                            ) -> tuple[Tensor, None, dict[str, float]]:
    """REINFORCE++: the discounted return of the token rewards, G_t = sum_{s >= t} gamma^(s-t) r_s (GAE with no
    critic and lambda 1), whitened over every token of the batch. -> (advantages [B, T], None, metrics)."""
    rewards, mask, metrics = _token_rewards(batch, params)
    returns, _ = compute_gae(rewards, torch.zeros_like(rewards), mask, gamma=params.gamma, lam=1.0)
    return masked_whiten(returns, mask), None, metrics


def reinforce_pp_baseline_advantages(batch: dict[str, Tensor], params: AdvantageParams
                                     ) -> tuple[Tensor, None, dict[str, float]]:
    """REINFORCE++ with the group baseline: the shaped sequence reward (minus beta * sequence KL when the KL is in
    the reward) minus its group's mean, on every response token, whitened over the batch's tokens.
    -> (advantages [B, T], None, metrics)."""
    seq, kl, metrics = _shaping(batch, params)
    if params.kl_in_reward:
        seq = seq - params.kl_coef * kl.sum(1)
    mask = batch["mask"].float()
    centred = group_advantages(seq, params.group_size, estimator="grpo", std_normalize=False)
    return masked_whiten(centred[:, None] * mask, mask), None, metrics


def _group_estimator(name: str):
    def estimate(batch: dict[str, Tensor], params: AdvantageParams) -> tuple[Tensor, None, dict[str, float]]:
        """Group baseline on the shaped sequence reward (minus beta * sequence KL when the KL is in the reward),
        broadcast to every response token. -> (advantages [B, T], None, metrics)."""
        seq, kl, metrics = _shaping(batch, params)
        if params.kl_in_reward:
            seq = seq - params.kl_coef * kl.sum(1)
        adv = group_advantages(seq, params.group_size, estimator=name, std_normalize=params.std_normalize)
        return adv[:, None] * batch["mask"].float(), None, metrics

    estimate.__name__ = f"{name}_advantages"
    return estimate


ADVANTAGE_ESTIMATORS = {
    "gae": gae_advantages,
    "grpo": _group_estimator("grpo"),
    "rloo": _group_estimator("rloo"),
    "reinforce_pp": reinforce_pp_advantages,
    "reinforce_pp_baseline": reinforce_pp_baseline_advantages,
}
GROUP_ESTIMATORS = ("grpo", "rloo", "reinforce_pp_baseline")  # need samples_per_prompt >= 2


def compute_advantages(algorithm: str, batch: dict[str, Tensor], params: AdvantageParams
                       ) -> tuple[Tensor, Tensor | None, dict[str, float]]:
    """(advantages [B, T], returns [B, T] or None without a critic, metrics) by the estimator named `algorithm`
    (a key of ADVANTAGE_ESTIMATORS; see the module docstring for the batch)."""
    try:
        estimator = ADVANTAGE_ESTIMATORS[algorithm]
    except KeyError:
        raise ValueError(f"unknown advantage estimator {algorithm!r}; known: {', '.join(ADVANTAGE_ESTIMATORS)}") \
            from None
    advantages, returns, metrics = estimator(batch, params)
    metrics["advantages/mean"] = masked_mean(advantages, batch["mask"].float()).item()
    return advantages, returns, metrics
