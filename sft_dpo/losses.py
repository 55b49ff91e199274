"""Pure tensor functions for the prelude's objectives: no DeepSpeed, no I/O. Shapes: B batch, T tokens, V vocab.

Reduction convention (micro-batch invariant): every function returns per-example or summed quantities, never a
mean over the micro-batch. The trainer divides the sum by the number of loss units (tokens for SFT, pairs for
DPO/RM) in the whole optimiser step across all ranks, so splitting a batch into micro-batches or ranks does not
change the gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from core.value_model import last_token_values  # noqa: F401  (re-exported: the RM's reduction)

DPO_LOSSES = ("dpo", "dpo_norm")


def token_logps(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """Log-probability of each next token. logits [B,T,V], input_ids [B,T] -> [B,T-1] (position t scores token
    t+1). Computed in float32."""
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    return logp.gather(-1, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)


def sequence_logps(logits: torch.Tensor, input_ids: torch.Tensor, loss_mask: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probability of the target tokens and their count. loss_mask [B,T] marks target tokens
    (position 0 is never a target). Returns (sum [B], count [B])."""
    mask = loss_mask[:, 1:].to(torch.float32)
    return (token_logps(logits, input_ids) * mask).sum(-1), mask.sum(-1)


def sft_loss_sum(logits: torch.Tensor, input_ids: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
    """Summed cross-entropy over target tokens (scalar). Divide by the step's target-token count."""
    labels = input_ids[:, 1:].masked_fill(loss_mask[:, 1:] == 0, -100)
    return F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]), labels.reshape(-1),
                           ignore_index=-100, reduction="sum")


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, *, beta: float, loss_type: str = "dpo",
             chosen_tokens: torch.Tensor | None = None, rejected_tokens: torch.Tensor | None = None,
             label_smoothing: float = 0.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Sigmoid DPO per pair. All log-prob inputs are summed over response tokens, shape [B].

    loss_type "dpo": log-ratios of summed log-probs (Rafailov et al.).
    loss_type "dpo_norm": Tulu 3 / open-instruct's length-normalised DPO: each of the four summed log-probs is
    divided by its own response's token count (policy and reference share the tokens), i.e. average per-token
    log-probs, before the usual sigmoid loss; β then acts on a per-token margin (Tulu 3 uses β = 5).

    loss = -(1-ε) log σ(β·h) - ε log σ(-β·h),  h = (πc - πr) - (refc - refr)
    rewards: chosen = β(πc - refc), rejected = β(πr - refr) (on the normalised values for dpo_norm).
    Returns (loss [B], metrics of [B] tensors: rewards/chosen, rewards/rejected, rewards/margins,
    rewards/accuracies).
    """
    if loss_type not in DPO_LOSSES:
        raise ValueError(f"unknown DPO loss_type {loss_type!r}; choose one of {DPO_LOSSES}")
    if loss_type == "dpo_norm":
        if chosen_tokens is None or rejected_tokens is None:
            raise ValueError("dpo_norm needs chosen_tokens and rejected_tokens (response token counts)")
        nc, nr = chosen_tokens.clamp(min=1), rejected_tokens.clamp(min=1)
        policy_chosen, ref_chosen = policy_chosen / nc, ref_chosen / nc
        policy_rejected, ref_rejected = policy_rejected / nr, ref_rejected / nr
    h = (policy_chosen - policy_rejected) - (ref_chosen - ref_rejected)
    loss = -F.logsigmoid(beta * h) * (1 - label_smoothing) - F.logsigmoid(-beta * h) * label_smoothing
    chosen_r = (beta * (policy_chosen - ref_chosen)).detach()
    rejected_r = (beta * (policy_rejected - ref_rejected)).detach()
    return loss, {"rewards/chosen": chosen_r, "rewards/rejected": rejected_r,
                  "rewards/margins": chosen_r - rejected_r, "rewards/accuracies": (chosen_r > rejected_r).float()}


def bradley_terry_loss(chosen_scores: torch.Tensor, rejected_scores: torch.Tensor
                       ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Reward-model loss per pair: -log σ(s_chosen - s_rejected). Scores [B] -> (loss [B], metrics [B])."""
    margin = chosen_scores - rejected_scores
    loss = -F.logsigmoid(margin)
    return loss, {"accuracy": (margin > 0).float().detach(), "margin": margin.detach(),
                  "scores/chosen": chosen_scores.detach(), "scores/rejected": rejected_scores.detach()}
