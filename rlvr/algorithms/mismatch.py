"""The train/inference mismatch: the generator (vLLM, or HF with its own kernels and dtype) and the learner give
the same tokens slightly different log-probs, so the samples are a little off-policy even with identical weights
(Yao et al. 2025, "Your efficient RL framework secretly brings you off-policy RL training"; on a GPU with bf16
vLLM the gap is large enough to destabilise training, on CPU in fp32 it is tiny). With the generator's log-probs
(mu) and the learner's recomputed old log-probs (pi_old) side by side:

    logprob_gap      how far apart they are: sums over a batch of |log pi_old - log mu| (per token and per row) and
                     its maximum, so the driver can log mean and max every step
    tis              truncated importance sampling, per token: w_t = min(pi_old / mu, cap)   (ppo.tis_cap)
    mask             masked importance sampling, per sequence: rho_i = prod_t pi_old / mu; w = rho_i where
                     rho_i <= threshold, else 0 (the sequence leaves the loss)   (ppo.mismatch_mask_threshold)

A correction (MISMATCH_CORRECTIONS, picked by ppo.mismatch_correction) takes the config section and a batch of
old_logprobs, gen_logprobs and mask [B, T] and returns (weights [B, T], detached, 0 on padding; sums for the
metrics). The policy loss multiplies its per-token loss by the weights (rlvr.algorithms.losses); the normaliser is
unchanged, so a masked sequence counts as a sample with zero loss. All [B, T]; pure tensor functions.
"""

from __future__ import annotations

from typing import Any

import torch

Tensor = torch.Tensor


@torch.no_grad()
def logprob_gap(learner_logprobs: Tensor, gen_logprobs: Tensor, mask: Tensor) -> dict[str, float]:
    """Sums over the batch of the gap |learner - generator| on the masked tokens [B, T]:
    gap_abs (sum over tokens), gap_tokens, gap_max (largest token gap), gap (sum over rows of each row's mean)
    and gap_rows (rows with a token). Means: gap_abs / gap_tokens per token, gap / gap_rows per sequence."""
    m = mask.float()
    diff = (learner_logprobs.float() - gen_logprobs.float()).abs() * m
    tokens = m.sum(-1)
    rows = tokens > 0
    return {"gap_abs": float(diff.sum()), "gap_tokens": float(m.sum()),
            "gap_max": float(diff.max()) if diff.numel() else 0.0,
            "gap": float((diff.sum(-1)[rows] / tokens[rows]).sum()), "gap_rows": float(rows.sum())}


@torch.no_grad()
def truncated_is_weights(old_logprobs: Tensor, gen_logprobs: Tensor, mask: Tensor, *, cap: float = 2.0
                         ) -> tuple[Tensor, dict[str, float]]:
    """Token-level truncated importance weights min(exp(old - gen), cap). [B, T] -> ([B, T], sums): truncated
    (tokens whose ratio exceeded the cap), units (tokens), weight (sum of the weights)."""
    m = mask.float()
    ratio = torch.exp((old_logprobs.float() - gen_logprobs.float()).clamp(max=20.0))
    weights = ratio.clamp(max=cap) * m
    return weights, {"truncated": float(((ratio > cap).float() * m).sum()), "units": float(m.sum()),
                     "weight": float(weights.sum())}


@torch.no_grad()
def sequence_mask_weights(old_logprobs: Tensor, gen_logprobs: Tensor, mask: Tensor, *, threshold: float = 2.0
                          ) -> tuple[Tensor, dict[str, float]]:
    """Sequence-level masked importance weights: rho_i = exp(sum_t (old - gen)), weight rho_i on every token of
    a row with rho_i <= threshold, 0 on the others. [B, T] -> ([B, T], sums): truncated (rows masked), units
    (rows with a token), weight (sum of the row weights)."""
    m = mask.float()
    log_rho = ((old_logprobs.float() - gen_logprobs.float()) * m).sum(-1)  # [B]
    rho = torch.exp(log_rho.clamp(max=20.0))
    keep = rho <= threshold
    rows = m.sum(-1) > 0
    row_weight = torch.where(keep, rho, torch.zeros_like(rho))
    return row_weight[:, None] * m, {"truncated": float((~keep & rows).sum()), "units": float(rows.sum()),
                                     "weight": float(row_weight[rows].sum())}


def tis_correction(cfg: Any, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
    return truncated_is_weights(batch["old_logprobs"], batch["gen_logprobs"], batch["mask"], cap=cfg.tis_cap)


def mask_correction(cfg: Any, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
    return sequence_mask_weights(batch["old_logprobs"], batch["gen_logprobs"], batch["mask"],
                                 threshold=cfg.mismatch_mask_threshold)


MISMATCH_CORRECTIONS = {"tis": tis_correction, "mask": mask_correction}
