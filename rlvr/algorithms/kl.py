"""Per-token KL estimators between the policy and the reference policy (Schulman's k1/k2/k3), evaluated on
tokens sampled from the policy. logprobs, ref_logprobs: [B, T] -> [B, T]."""

from __future__ import annotations

import torch


def kl_k1(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """log(p/q): unbiased, can be negative per token. What Tulu 3 / SmolTulu subtract in the PPO reward."""
    return logprobs - ref_logprobs


def kl_k2(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """0.5 * log(p/q)^2: biased, low variance, non-negative."""
    return 0.5 * (logprobs - ref_logprobs) ** 2


def kl_k3(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """q/p - 1 - log(q/p): unbiased and non-negative (the GRPO paper's KL loss term)."""
    log_ratio = (ref_logprobs - logprobs).clamp(-20, 20)  # exp() overflow guard on wild tokens
    return torch.exp(log_ratio) - log_ratio - 1


KL_ESTIMATORS = {"k1": kl_k1, "k2": kl_k2, "k3": kl_k3}


def kl_estimate(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, kind: str = "k1") -> torch.Tensor:
    try:
        fn = KL_ESTIMATORS[kind]
    except KeyError:
        raise ValueError(f"unknown KL estimator {kind!r}; known: {', '.join(KL_ESTIMATORS)}") from None
    return fn(logprobs, ref_logprobs)
