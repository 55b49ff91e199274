"""Log-probs of response tokens under a causal LM, as the learner computes them: the batch cut into micro-batches
by length (rlvr.actors.batch), each prompt computed once for its samples where they share it
(rlvr.actors.shared_prompt), logits / temperature, only response positions projected onto the vocabulary.

Two users: the learner (old, new and reference log-probs, rlvr.actors.learner) and `ReferenceScorer`, the frozen
reference policy a generator can hold (`ppo.reference_on_generators`): it scores each batch in the generator's
process right after generating it, so with asynchronous rollouts the reference pass of batch t+1 runs on the
generator's core while the learners train on batch t, and the learners hold no reference model. Both run this
module's code on the same fp32 weights, so their reference log-probs agree up to float rounding.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from core.model_factory import build_model
from rlvr.actors.batch import (
    build_batch,
    gather_positions,
    grouped_micro_batches,
    length_sorted_micro_batches,
    select_rows,
    sequence_lengths,
    trim,
)
from rlvr.actors.shared_prompt import prompt_groups, shared_prompt_logits, supports_packing, worth_sharing
from rlvr.algorithms import logprobs_from_logits


def micro_batches(batch: dict[str, torch.Tensor], size: int, share_prompts: bool
                  ) -> Iterator[tuple[list[int], dict[str, torch.Tensor]]]:
    """(row indices, micro-batch) pairs: rows cut by length, a prompt's samples kept together when prompts are
    shared, each micro-batch trimmed of the padding none of its rows needs."""
    lengths = sequence_lengths(batch)
    if share_prompts:
        cuts = grouped_micro_batches(prompt_groups(batch)[1].tolist(), lengths, size)
    else:
        cuts = length_sorted_micro_batches(lengths, size)
    for rows in cuts:
        yield rows, trim(select_rows(batch, rows))


def response_logits(model, batch: dict[str, torch.Tensor], *, pad_id: int, share_prompts: bool) -> torch.Tensor:
    """Logits at the positions that predict response tokens [B, T, V]. Only the sequence tail from the earliest
    response position is projected onto the vocabulary (`logits_to_keep`): with a 49k vocabulary the full
    [B, L, V] logits would dominate memory. Rows sharing a prompt compute it once when `share_prompts`."""
    if share_prompts and worth_sharing(batch):
        return shared_prompt_logits(model, batch, pad_id)
    L = batch["input_ids"].shape[1]
    first = int(batch["index"][:, 0].min())
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], logits_to_keep=L - first)
    return gather_positions(out.logits, batch["index"] - first)


class ReferenceScorer:
    """The frozen reference policy (the run's starting model, fp32, dropout off) on one device, scoring the
    responses a generator produced."""

    def __init__(self, model: str, *, pad_id: int, micro_batch_size: int, share_prompts: bool = True,
                 device: str = "cpu"):
        # frozen, inference mode, dropout off. The starting model: with LoRA too, where the learners' reference
        # is the policy with its adapter disabled, i.e. the same base weights
        self.model = build_model("reference", model, dtype=torch.float32, device=device, keep_dropout=False)
        self.pad_id, self.micro_batch_size, self.device = pad_id, micro_batch_size, device
        self.share_prompts = share_prompts and supports_packing(self.model)

    @torch.no_grad()
    def score(self, samples: list[dict[str, Any]], temperature: float) -> list[list[float]]:
        """Log-probs of each sample's response tokens (`prompt_ids`, `response_ids`) at `temperature`."""
        if not samples:
            return []
        batch = {k: v.to(self.device) for k, v in build_batch(samples, self.pad_id).items()}
        out = torch.zeros(batch["response_mask"].shape, dtype=torch.float32)
        for rows, mb in micro_batches(batch, self.micro_batch_size, self.share_prompts):
            logits = response_logits(self.model, mb, pad_id=self.pad_id, share_prompts=self.share_prompts)
            lp = logprobs_from_logits(logits.float() / temperature, mb["response_ids"])
            out[rows, : lp.shape[1]] = lp.cpu()
        return [out[i, : len(s["response_ids"])].tolist() for i, s in enumerate(samples)]
