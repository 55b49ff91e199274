"""PPO losses, registered by name (the config's ppo.policy_loss / ppo.value_loss pick them; the learner looks them
up here). Each takes per-token tensors [B, T] and returns (loss scalar, metrics).

Every loss is per-token, reduced by core.losses.aggregate_loss, the one loss-reduction function of every trainer:
sum over masked tokens divided by `num_tokens`. Passing the token count of the whole mini-batch (all
micro-batches, all ranks) divided by the world size, and backpropagating with DeepSpeed's accumulation scaling off,
makes the gradient the same however the mini-batch is split into micro-batches or shards (STYLE.md #3) — the
LR/BS-ratio experiments depend on it.
"""

from __future__ import annotations

import torch

from core.losses import aggregate_loss
from rlvr.algorithms.logprobs import masked_mean


def ppo_policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                    mask: torch.Tensor, *, clip_eps: float = 0.2, clip_eps_high: float | None = None,
                    num_tokens: float | None = None, log_ratio_clip: float = 20.0
                    ) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped surrogate: max(-A * ratio, -A * clip(ratio, 1 - eps, 1 + eps_high)). All [B, T] -> scalar.

    `clip_eps_high` (DAPO's clip-higher) defaults to `clip_eps`. log(ratio) is clamped to +-`log_ratio_clip`
    before exp() (as OpenRLHF does): a token whose probability moved by e^100 would otherwise give an inf ratio and
    NaN gradients for the whole batch. Clamped tokens get no gradient through the ratio; their share is reported
    as `policy/log_ratio_clamped_frac`."""
    high = clip_eps if clip_eps_high is None else clip_eps_high
    raw_log_ratio = logprobs - old_logprobs
    log_ratio = raw_log_ratio.clamp(-log_ratio_clip, log_ratio_clip)
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_eps, 1.0 + high)
    per_token = torch.maximum(unclipped, clipped)
    loss = aggregate_loss(per_token, mask, num_units=num_tokens)
    with torch.no_grad():
        metrics = {
            "policy/clipfrac": masked_mean((clipped > unclipped).float(), mask).item(),
            "policy/approx_kl": masked_mean(0.5 * log_ratio**2, mask).item(),
            "policy/ratio_mean": masked_mean(ratio, mask).item(),
            "policy/log_ratio_clamped_frac": masked_mean((raw_log_ratio.abs() > log_ratio_clip).float(), mask).item(),
        }
    return loss, metrics


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor, *,
               clip_eps: float = 0.2, num_tokens: float | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped value loss: 0.5 * max((V - R)^2, (V_clip - R)^2), V_clip = V_old + clip(V - V_old, ±eps).
    All [B, T] -> scalar."""
    clipped_values = old_values + torch.clamp(values - old_values, -clip_eps, clip_eps)
    unclipped = (values - returns) ** 2
    clipped = (clipped_values - returns) ** 2
    per_token = 0.5 * torch.maximum(unclipped, clipped)
    loss = aggregate_loss(per_token, mask, num_units=num_tokens)
    with torch.no_grad():
        metrics = {
            "value/clipfrac": masked_mean((clipped > unclipped).float(), mask).item(),
            "value/loss": masked_mean(per_token, mask).item(),
            "value/mean": masked_mean(values, mask).item(),
        }
    return loss, metrics


POLICY_LOSSES = {"ppo_clip": ppo_policy_loss}
VALUE_LOSSES = {"clipped_mse": value_loss}
