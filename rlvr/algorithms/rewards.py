"""Reward shaping for RLVR, as Tulu 3 and SmolTulu do it.

A verified answer earns `verified_reward` (10) times the verifier's score in [0, 1]. A response cut off without
EOS gets `no_eos_penalty` (-10) *instead of* its verification reward (open-instruct replaces the score; it does
not add to it). For PPO the KL penalty -kl_coef * KL(policy || reference) is paid on every token and the sequence
reward lands on the last real token.

DAPO's soft overlong punishment (Yu et al. 2025, arXiv 2503.14476, eq. 13) is added to the sequence reward: with
the length cap L (rollout.max_new_tokens) and a buffer of the last B tokens (rewards.overlong_buffer), a response of
length n > L - B loses penalty x (n - (L - B)) / B, reaching the whole penalty at the cap.
"""

from __future__ import annotations

import torch


def sequence_rewards(verifier_scores: torch.Tensor, finished: torch.Tensor, *, verified_reward: float = 10.0,
                     no_eos_penalty: float | None = -10.0) -> torch.Tensor:
    """Per-sequence reward. verifier_scores [B] float, finished [B] bool (ended with EOS) -> [B].
    `no_eos_penalty=None` keeps the verification reward of cut-off responses (TRL's default behaviour)."""
    scored = verified_reward * verifier_scores.float()
    if no_eos_penalty is None:
        return scored
    return torch.where(finished.bool(), scored, torch.full_like(scored, no_eos_penalty))


def overlong_penalty(lengths: torch.Tensor, *, max_len: int, buffer: int, penalty: float) -> torch.Tensor:
    """DAPO's soft overlong punishment, <= 0. lengths [B] (response tokens) -> [B]:
    -penalty * clamp((n - (max_len - buffer)) / buffer, 0, 1); buffer 0 gives 0."""
    if buffer <= 0:
        return torch.zeros_like(lengths, dtype=torch.float32)
    exceed = lengths.float() - (max_len - buffer)
    return -penalty * (exceed / buffer).clamp(0.0, 1.0)


def shape_token_rewards(verifier_scores: torch.Tensor, finished: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor,
                        *, verified_reward: float = 10.0, no_eos_penalty: float | None = -10.0,
                        kl_coef: float = 0.05, sequence_reward: torch.Tensor | None = None
                        ) -> tuple[torch.Tensor, dict[str, float]]:
    """Token-level PPO rewards. verifier_scores [B], finished [B], kl [B, T], mask [B, T] -> ([B, T], metrics).
    `sequence_reward` [B]: the shaped sequence reward when the caller made it (with the overlong penalty);
    default `sequence_rewards` of the scores.

    Padding positions get 0. A row with an empty mask puts its sequence reward on position 0."""
    mask = mask.to(kl.dtype)
    seq = sequence_reward if sequence_reward is not None else sequence_rewards(
        verifier_scores, finished, verified_reward=verified_reward, no_eos_penalty=no_eos_penalty)
    kl_penalty = -kl_coef * kl * mask
    last = (mask.sum(1).long() - 1).clamp(min=0)
    rewards = kl_penalty.clone()
    rewards[torch.arange(rewards.shape[0]), last] += seq.to(rewards.dtype)
    seq_kl = (kl * mask).sum(1)
    metrics = {
        "reward/sequence_mean": seq.mean().item(),
        "reward/kl_penalty_mean": kl_penalty.sum(1).mean().item(),
        "reward/total_mean": rewards.sum(1).mean().item(),
        "kl/sequence_mean": seq_kl.mean().item(),
        "reward/no_eos_fraction": (~finished.bool()).float().mean().item(),
    }
    return rewards, metrics
