"""Advantage estimators: GAE (PPO with a critic) and group-normalised advantages (GRPO, RLOO; no critic)."""

from __future__ import annotations

import torch


def compute_gae(token_rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, *, gamma: float = 1.0,
                lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
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


def group_advantages(seq_rewards: torch.Tensor, group_size: int, *, estimator: str = "grpo",
                     std_normalize: bool = True, eps: float = 1e-6) -> torch.Tensor:
    """Group-relative advantages. seq_rewards [B] with B = prompts * group_size, each prompt's samples contiguous.

    grpo: (r - mean_group) / (std_group + eps) (unbiased std; `std_normalize=False` keeps r - mean, as Dr. GRPO).
    rloo: r_i - mean_{j != i} r_j, the leave-one-out baseline (never divided by std)."""
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


ADVANTAGE_ESTIMATORS = {
    "gae": compute_gae,
    "grpo": lambda r, g, **kw: group_advantages(r, g, estimator="grpo", **kw),
    "rloo": lambda r, g, **kw: group_advantages(r, g, estimator="rloo", **kw),
}
