"""Per-token KL estimators between the policy and the reference policy (Schulman's k1/k2/k3), evaluated on
tokens sampled from the policy (logprobs, ref_logprobs: [B, T] -> [B, T]; KL_ESTIMATORS, ppo.kl_estimator), and
the controllers of the KL coefficient beta between steps (KL_CONTROLLERS, ppo.kl_controller: plain floats; the
driver keeps beta and checkpoints it)."""

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


# ---- the KL coefficient between steps (ppo.kl_controller) ----

def fixed_kl_coef(coef: float, kl: float, *, target: float, horizon: int, n_steps: int) -> float:
    """The fixed coefficient: beta stays ppo.kl_coef."""
    return coef


def adaptive_kl_coef(coef: float, kl: float, *, target: float, horizon: int, n_steps: int) -> float:
    """The adaptive controller of Ziegler et al. 2019 (arXiv 1909.08593, as verl's and TRL's legacy PPO): with the
    proportional error e = clip(KL / target - 1, -0.2, 0.2), beta <- beta * (1 + e * n_steps / horizon), where KL is
    the step's mean sequence KL to the reference and n_steps the samples the step trained on. beta grows while the
    policy is further than the target from the reference and shrinks while it is closer."""
    error = min(max(kl / target - 1.0, -0.2), 0.2)
    return coef * (1.0 + error * n_steps / horizon)


KL_CONTROLLERS = {"fixed": fixed_kl_coef, "adaptive": adaptive_kl_coef}
