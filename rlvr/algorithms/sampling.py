"""DAPO's dynamic sampling, the selection half (Yu et al. 2025, arXiv 2503.14476, section 3.2): a prompt whose
samples all got the same verifier score has zero group-relative advantage, so it adds no gradient, only noise in
the normaliser; DAPO drops such groups and samples more prompts until the batch is full. The driver's side (more
generation rounds, the batch assembled from the kept groups) is rlvr.rollouts.Rollouts.dynamic_batch."""

from __future__ import annotations

import torch


def informative_groups(scores: torch.Tensor, group_size: int) -> torch.Tensor:
    """Which groups have scores that are not all equal. scores [P * group_size] (a prompt's samples contiguous)
    -> [P] bool."""
    if group_size < 1 or scores.numel() % group_size:
        raise ValueError(f"{scores.numel()} scores do not split into groups of {group_size}")
    groups = scores.float().view(-1, group_size)
    return (groups.max(1).values - groups.min(1).values) > 0
