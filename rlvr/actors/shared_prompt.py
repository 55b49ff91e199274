"""One forward pass per prompt for all of its samples: the learner's log-probs of a group's responses without
recomputing the prompt they share (GRPO/RLOO sample several responses per prompt; the prompt is often longer than
a response, so most of a group's tokens are copies of it).

For a micro-batch whose rows share prompts (rlvr.actors.batch layout):
    1. the G distinct prompts, right-padded, in one pass that fills a KV cache; the logits at each prompt's last
       token predict the first response token of every sample of that prompt;
    2. the cache rows gathered to the samples (row i gets its prompt's keys and values), then the responses in a
       second pass at positions prompt_len + t, attending to their prompt through the cache and to their own
       earlier tokens (padding between the prompt and the response is masked out).
The logits equal those of the plain pass over each full sequence up to float rounding, and gradients flow into
the shared prompt from every sample (backward through the gathered cache sums them), so the gradient is the same.
Right padding keeps every query row attending to at least one real key: a fully masked row would give NaN that the
backward pass would spread into the weight gradients.

Needs a KV cache in training mode: not with gradient checkpointing (transformers turns the cache off there), and
used only up to ZeRO stage 2 (stage 3 re-gathers parameters per pass; not verified). The critic (a sequence
classifier) always runs the plain pass.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache


def prompt_groups(batch: dict[str, torch.Tensor]) -> tuple[list[tuple[int, ...]], torch.Tensor]:
    """(the distinct prompts of the rows, in order of first appearance; the prompt index of each row [b])."""
    ids, plen = batch["input_ids"], batch["index"][:, 0] + 1
    keys = [tuple(ids[i, : int(plen[i])].tolist()) for i in range(ids.shape[0])]
    order = {k: None for k in keys}
    unique = list(order)
    where = {k: g for g, k in enumerate(unique)}
    return unique, torch.tensor([where[k] for k in keys], dtype=torch.long, device=ids.device)


def worth_sharing(batch: dict[str, torch.Tensor]) -> bool:
    """True when at least two rows of the micro-batch have the same prompt."""
    unique, _ = prompt_groups(batch)
    return len(unique) < batch["input_ids"].shape[0]


def shared_prompt_logits(engine, batch: dict[str, torch.Tensor], pad_id: int) -> torch.Tensor:
    """Logits at the positions that predict each row's response tokens [b, T, V], prompts computed once."""
    unique, group = prompt_groups(batch)
    dev = batch["input_ids"].device
    lengths = torch.tensor([len(p) for p in unique], device=dev)
    G, P = len(unique), int(lengths.max())
    prompt_ids = torch.full((G, P), pad_id, dtype=torch.long, device=dev)
    prompt_mask = torch.zeros((G, P), dtype=torch.long, device=dev)
    for g, p in enumerate(unique):
        prompt_ids[g, : len(p)] = torch.tensor(p, device=dev)
        prompt_mask[g, : len(p)] = 1
    keep = P - int(lengths.min()) + 1  # project only the tail that holds every prompt's last token
    cache = DynamicCache()
    out = engine(input_ids=prompt_ids, attention_mask=prompt_mask, past_key_values=cache, use_cache=True,
                 logits_to_keep=keep)
    first = out.logits[torch.arange(G, device=dev), lengths - 1 - (P - keep)][group]  # [b, V]
    T = batch["response_ids"].shape[1]
    if T == 1:
        return first[:, None]
    cache.batch_select_indices(group)
    resp_ids = batch["response_ids"][:, : T - 1]
    attn = torch.cat([prompt_mask[group], batch["response_mask"][:, : T - 1].long()], 1)
    pos = (lengths[group][:, None] + torch.arange(T - 1, device=dev)).long()
    out = engine(input_ids=resp_ids, attention_mask=attn, position_ids=pos, past_key_values=cache, use_cache=True)
    return torch.cat([first[:, None], out.logits], 1)


def duplicate_prompt_lengths(batch: dict[str, torch.Tensor]) -> list[int]:
    """Lengths of the prompt copies the shared pass does not compute (all but the first row of each prompt)."""
    unique, group = prompt_groups(batch)
    counts = torch.bincount(group, minlength=len(unique)).tolist()
    return [len(p) for p, c in zip(unique, counts) for _ in range(c - 1)]
