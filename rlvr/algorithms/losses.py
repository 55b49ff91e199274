"""Policy and value losses, registered by name: `ppo.policy_loss` picks one of POLICY_LOSSES, `ppo.value_loss` one
of VALUE_LOSSES. A registered loss takes its config section (rlvr.config.PPOConfig) and the micro-batch and
returns (loss scalar, metrics); it reads the settings it needs itself, so the learner passes every loss the same
two things. The micro-batch (per-token tensors [B, T]):
    logprobs       the policy's log-probs of the sampled tokens (with gradient)
    old_logprobs   the policy the batch is compared with (PPO's pi_old; see rlvr.actors.learner)
    advantages     from rlvr.algorithms.compute_advantages
    mask           1 on the tokens the loss counts
    weights        optional per-token weights, detached (the train/inference mismatch correction,
                   rlvr.algorithms.mismatch); multiplied onto the per-token loss
    num_units      the normaliser: the optimiser step's units (of the config's loss_agg_mode) over all
                   micro-batches and ranks, divided by the world size (core.losses)
The value losses take values, old_values, returns, mask and num_units (tokens: the critic is always token-mean).

The losses, each the tensor function below its registered name:
    ppo        clipped surrogate max(-A r, -A clip(r, 1 - eps, 1 + eps_high)) (Schulman et al. 2017; eps_high:
               DAPO's clip-higher)
    dual_clip  ppo, and for A < 0 the loss is also capped at -A c (c = ppo.clip_ratio_c; Ye et al. 2020,
               arXiv 1912.09729): a token whose ratio exploded cannot dominate a negative update
    gspo       the ratio of the whole sequence, s_i = (pi/pi_old)(y_i)^(1/|y_i|), clipped per sequence (Zheng et al.
               2025, arXiv 2507.18071), in its token form (value s_i, gradient s_i * grad log pi(y_t))
    cispo      REINFORCE with a clipped, detached importance weight: -sg(clip(r, 1 - eps, 1 + eps_high)) A log pi
               (MiniMax-M1, arXiv 2506.13585): clipped tokens keep their gradient
    ppo_clip   the name `ppo` had before these were added
Every per-token loss is reduced by core.losses.aggregate_loss (the one loss reduction of every trainer) with the
mode ppo.loss_agg_mode names, so each keeps the gradient the same however the step is sharded or accumulated.

log(ratio) is clamped to +-log_ratio_clip before exp() (as OpenRLHF does): a token whose probability moved by e^100
would otherwise give an inf ratio and NaN gradients for the whole batch. Clamped tokens get no gradient through
the ratio; their share is reported as `policy/log_ratio_clamped_frac`.
"""

from __future__ import annotations

from typing import Any

import torch

from core.losses import aggregate_loss
from rlvr.algorithms.logprobs import masked_mean

Tensor = torch.Tensor


def _reduce(per_token: Tensor, mask: Tensor, weights: Tensor | None, num_units, mode: str) -> Tensor:
    if weights is not None:
        per_token = per_token * weights.detach()
    return aggregate_loss(per_token, mask, num_units=num_units, mode=mode)


def _ratio(logprobs: Tensor, old_logprobs: Tensor, mask: Tensor, log_ratio_clip: float
           ) -> tuple[Tensor, dict[str, float]]:
    """exp(clamped log(pi/pi_old)) [B, T] and the metrics every policy loss reports."""
    raw = logprobs - old_logprobs
    log_ratio = raw.clamp(-log_ratio_clip, log_ratio_clip)
    ratio = torch.exp(log_ratio)
    with torch.no_grad():
        metrics = {
            "policy/approx_kl": masked_mean(0.5 * log_ratio**2, mask).item(),
            "policy/ratio_mean": masked_mean(ratio, mask).item(),
            "policy/log_ratio_clamped_frac": masked_mean((raw.abs() > log_ratio_clip).float(), mask).item(),
        }
    return ratio, metrics


def ppo_policy_loss(logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor, *,
                    clip_eps: float = 0.2, clip_eps_high: float | None = None, clip_ratio_c: float | None = None,
                    num_units: float | None = None, loss_agg_mode: str = "token-mean",
                    weights: Tensor | None = None, log_ratio_clip: float = 20.0,
                    num_tokens: float | None = None) -> tuple[Tensor, dict[str, float]]:
    """Clipped surrogate: max(-A * r, -A * clip(r, 1 - eps, 1 + eps_high)), r = pi/pi_old. All [B, T] -> scalar.

    `clip_eps_high` (DAPO's clip-higher) defaults to `clip_eps`. With `clip_ratio_c` (dual-clip) tokens with A < 0
    take min(that, -A * c) (the share capped: `policy/clipfrac_lower`). `num_tokens`: the earlier name of
    `num_units` (token-mean)."""
    high = clip_eps if clip_eps_high is None else clip_eps_high
    ratio, metrics = _ratio(logprobs, old_logprobs, mask, log_ratio_clip)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_eps, 1.0 + high)
    per_token = torch.maximum(unclipped, clipped)
    with torch.no_grad():
        metrics["policy/clipfrac"] = masked_mean((clipped > unclipped).float(), mask).item()
    if clip_ratio_c is not None:
        if clip_ratio_c <= 1:
            raise ValueError(f"dual-clip needs clip_ratio_c > 1, got {clip_ratio_c}")
        cap = -advantages * clip_ratio_c
        capped = (advantages < 0) & (per_token > cap)
        per_token = torch.where(advantages < 0, torch.minimum(per_token, cap), per_token)
        metrics["policy/clipfrac_lower"] = masked_mean(capped.float(), mask).item()
    units = num_tokens if num_units is None else num_units
    return _reduce(per_token, mask, weights, units, loss_agg_mode), metrics


def gspo_policy_loss(logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor, *,
                     clip_eps: float = 3e-4, clip_eps_high: float | None = 4e-4, num_units: float | None = None,
                     loss_agg_mode: str = "seq-mean-token-mean", weights: Tensor | None = None,
                     log_ratio_clip: float = 20.0) -> tuple[Tensor, dict[str, float]]:
    """GSPO: the sequence ratio s_i = exp(mean_t log(pi/pi_old)(y_i,t)), clipped per sequence:
    max(-A s_i, -A clip(s_i, 1 - eps, 1 + eps_high)) on every token of y_i. All [B, T] -> scalar.

    Token form (GSPO-token, the paper's eq. 13): log s_i,t = sg[log s_i] + log pi(y_t) - sg[log pi(y_t)], whose
    value is s_i and whose gradient is s_i * grad log pi(y_t); with a sequence-constant advantage and
    seq-mean-token-mean (the paper's reduction) the gradient is exactly that of the sequence objective."""
    high = clip_eps if clip_eps_high is None else clip_eps_high
    m = mask.to(logprobs.dtype)
    _, metrics = _ratio(logprobs, old_logprobs, mask, log_ratio_clip)
    log_ratio = (logprobs - old_logprobs).clamp(-log_ratio_clip, log_ratio_clip)
    seq_log_ratio = (log_ratio * m).sum(-1) / m.sum(-1).clamp(min=1)  # [B]
    seq_ratio = torch.exp(logprobs - logprobs.detach() + seq_log_ratio.detach()[:, None])
    unclipped = -advantages * seq_ratio
    clipped = -advantages * torch.clamp(seq_ratio, 1.0 - clip_eps, 1.0 + high)
    per_token = torch.maximum(unclipped, clipped)
    with torch.no_grad():
        rows = m.sum(-1) > 0
        clipped_rows = ((clipped > unclipped).float() * m).sum(-1) > 0
        metrics["policy/clipfrac"] = masked_mean((clipped > unclipped).float(), mask).item()
        metrics["policy/seq_clipfrac"] = float(clipped_rows[rows].float().mean()) if rows.any() else 0.0
        metrics["policy/seq_ratio_mean"] = float(torch.exp(seq_log_ratio[rows]).mean()) if rows.any() else 1.0
    return _reduce(per_token, mask, weights, num_units, loss_agg_mode), metrics


def cispo_policy_loss(logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor, *,
                      clip_eps: float = 1.0, clip_eps_high: float | None = 4.0, num_units: float | None = None,
                      loss_agg_mode: str = "token-mean", weights: Tensor | None = None,
                      log_ratio_clip: float = 20.0) -> tuple[Tensor, dict[str, float]]:
    """CISPO: -sg(clip(r, 1 - eps, 1 + eps_high)) * A * log pi(y_t). All [B, T] -> scalar.

    The importance weight is clipped and detached, so the gradient is always clip(r) * A * grad log pi: a clipped
    token still contributes (PPO's clip zeroes it). `policy/clipfrac` is the share of tokens whose weight was cut."""
    high = clip_eps if clip_eps_high is None else clip_eps_high
    ratio, metrics = _ratio(logprobs, old_logprobs, mask, log_ratio_clip)
    weight = torch.clamp(ratio, 1.0 - clip_eps, 1.0 + high).detach()
    per_token = -weight * advantages * logprobs
    with torch.no_grad():
        metrics["policy/clipfrac"] = masked_mean((weight != ratio).float(), mask).item()
    return _reduce(per_token, mask, weights, num_units, loss_agg_mode), metrics


def value_loss(values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor, *,
               clip_eps: float = 0.2, num_tokens: float | None = None) -> tuple[Tensor, dict[str, float]]:
    """Clipped value loss: 0.5 * max((V - R)^2, (V_clip - R)^2), V_clip = V_old + clip(V - V_old, ±eps).
    All [B, T] -> scalar, token-mean over `num_tokens`."""
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


# ---- registered: (config section, micro-batch) -> (loss, metrics) ----

def _policy_args(cfg: Any, batch: dict[str, Any]) -> tuple[tuple, dict[str, Any]]:
    tensors = (batch["logprobs"], batch["old_logprobs"], batch["advantages"], batch["mask"])
    common = {"clip_eps": cfg.clip_eps, "clip_eps_high": cfg.clip_eps_high, "num_units": batch.get("num_units"),
              "loss_agg_mode": cfg.loss_agg_mode, "weights": batch.get("weights"),
              "log_ratio_clip": cfg.log_ratio_clip}
    return tensors, common


def ppo(cfg: Any, batch: dict[str, Any]) -> tuple[Tensor, dict[str, float]]:
    tensors, common = _policy_args(cfg, batch)
    return ppo_policy_loss(*tensors, **common)


def dual_clip(cfg: Any, batch: dict[str, Any]) -> tuple[Tensor, dict[str, float]]:
    tensors, common = _policy_args(cfg, batch)
    return ppo_policy_loss(*tensors, clip_ratio_c=cfg.clip_ratio_c, **common)


def gspo(cfg: Any, batch: dict[str, Any]) -> tuple[Tensor, dict[str, float]]:
    tensors, common = _policy_args(cfg, batch)
    return gspo_policy_loss(*tensors, **common)


def cispo(cfg: Any, batch: dict[str, Any]) -> tuple[Tensor, dict[str, float]]:
    tensors, common = _policy_args(cfg, batch)
    return cispo_policy_loss(*tensors, **common)


def clipped_mse(cfg: Any, batch: dict[str, Any]) -> tuple[Tensor, dict[str, float]]:
    return value_loss(batch["values"], batch["old_values"], batch["returns"], batch["mask"],
                      clip_eps=cfg.value_clip_eps, num_tokens=batch.get("num_units"))


POLICY_LOSSES = {"ppo": ppo, "dual_clip": dual_clip, "gspo": gspo, "cispo": cispo, "ppo_clip": ppo}
VALUE_LOSSES = {"clipped_mse": clipped_mse}
