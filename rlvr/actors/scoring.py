"""Log-probs of response tokens under a causal LM, as the learner computes them: the batch cut into micro-batches
by length (rlvr.actors.batch), each prompt computed once for its samples where they share it
(rlvr.actors.shared_prompt), only response positions projected onto the vocabulary, log-probs at the
temperature in fp32 chunks (rlvr.algorithms.token_logprobs).

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
    grouped_micro_batches,
    length_sorted_micro_batches,
    select_rows,
    sequence_lengths,
    trim,
)
from rlvr.actors.shared_prompt import (
    prompt_groups,
    shared_prompt_hidden,
    supports_packing,
    use_segmented_attention,
    worth_sharing,
)
from rlvr.algorithms import token_logprobs


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


def response_logprobs(model, batch: dict[str, torch.Tensor], *, pad_id: int, share_prompts: bool,
                      temperature: float, with_entropy: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log p(response token) [B, T] in fp32 at `temperature` (0 on padding), and each position's entropy [B, T]
    (no gradient) when `with_entropy`. `model`: a causal LM or a DeepSpeed engine around one.

    The model body runs over the micro-batch (rows sharing a prompt compute it once when `share_prompts`), the
    hidden states of the n valid response positions are picked out, and only those go through the output
    projection: no padding position and no prompt position is projected onto the vocabulary, and the [n, V]
    logits (bf16 under autocast) go to rlvr.algorithms.token_logprobs, which never keeps an fp32 copy of them.
    The projection is called as a module, so autocast, ZeRO-3's parameter gathering and LoRA apply to it."""
    module = getattr(model, "module", model)
    decoder, head = module.get_decoder(), module.get_output_embeddings()
    valid = batch["response_mask"].bool()
    if share_prompts and worth_sharing(batch):
        hidden = shared_prompt_hidden(decoder, batch, pad_id)
    else:
        states = decoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        rows = torch.arange(valid.shape[0], device=valid.device)[:, None].expand_as(valid)[valid]
        hidden = states[rows, batch["index"][valid]]
    lp, ent = token_logprobs(head(hidden), batch["response_ids"][valid], temperature, with_entropy)
    zeros = torch.zeros(valid.shape, dtype=torch.float32, device=valid.device)
    return zeros.masked_scatter(valid, lp), None if ent is None else zeros.masked_scatter(valid, ent)


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
        if self.share_prompts:
            use_segmented_attention(self.model)

    @torch.no_grad()
    def score(self, samples: list[dict[str, Any]], temperature: float) -> list[list[float]]:
        """Log-probs of each sample's response tokens (`prompt_ids`, `response_ids`) at `temperature`."""
        if not samples:
            return []
        batch = {k: v.to(self.device) for k, v in build_batch(samples, self.pad_id).items()}
        out = torch.zeros(batch["response_mask"].shape, dtype=torch.float32)
        for rows, mb in micro_batches(batch, self.micro_batch_size, self.share_prompts):
            lp, _ = response_logprobs(self.model, mb, pad_id=self.pad_id, share_prompts=self.share_prompts,
                                      temperature=temperature)
            out[rows, : lp.shape[1]] = lp.cpu()
        return [out[i, : len(s["response_ids"])].tolist() for i, s in enumerate(samples)]
