"""The learner's batch layout: right-padded sequences, the response-token view of them, and micro-batches cut by
length so that little compute goes to padding.

A batch is a dict of tensors over B sequences: `input_ids`, `attention_mask` [B, L] (prompt + response, right-padded)
and, over the T response positions, `response_ids`, `response_mask`, `index` (the position whose logits predict
response token t) plus any per-token tensors the learner adds (old/reference log-probs, values, advantages,
returns, the generator's log-probs), all [B, T].

Micro-batches by length: the rows of a mini-batch are sorted by sequence length before they are cut into
micro-batches (with prompts shared by several samples: whole groups together, groups by length), and each
micro-batch is trimmed to its own longest sequence and response (`trim`). The losses are
sums over tokens divided by the mini-batch's global token count (core.losses), so which rows share a micro-batch
does not change the gradient, only how much padding is computed.
"""

from __future__ import annotations

from typing import Any

import torch

SEQUENCE_KEYS = ("input_ids", "attention_mask")  # [B, L]; every other key is [B, T]


def build_batch(samples: list[dict[str, Any]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded prompt+response sequences and the response-token view of them.

    input_ids, attention_mask: [B, L]; response_ids, response_mask: [B, T]; index [B, T] = sequence position
    whose logits predict response token t (prompt_len - 1 + t)."""
    B = len(samples)
    L = max(len(s["prompt_ids"]) + len(s["response_ids"]) for s in samples)
    T = max(max(len(s["response_ids"]) for s in samples), 1)
    input_ids = torch.full((B, L), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((B, L), dtype=torch.long)
    response_ids = torch.full((B, T), pad_id, dtype=torch.long)
    response_mask = torch.zeros((B, T), dtype=torch.float32)
    index = torch.zeros((B, T), dtype=torch.long)
    for i, s in enumerate(samples):
        p, r = s["prompt_ids"], s["response_ids"]
        seq = list(p) + list(r)
        input_ids[i, : len(seq)] = torch.tensor(seq)
        attention_mask[i, : len(seq)] = 1
        if r:
            response_ids[i, : len(r)] = torch.tensor(r)
            response_mask[i, : len(r)] = 1
        index[i] = (len(p) - 1 + torch.arange(T)).clamp(max=L - 1)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "response_ids": response_ids,
            "response_mask": response_mask, "index": index}


def gather_positions(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x [B, L, ...] at positions index [B, T] -> [B, T, ...]."""
    if x.dim() == 2:
        return torch.gather(x, 1, index)
    return torch.gather(x, 1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def select_rows(batch: dict[str, torch.Tensor | None], rows) -> dict[str, torch.Tensor | None]:
    """The given rows of every tensor (None values stay None)."""
    return {k: None if v is None else v[rows] for k, v in batch.items()}


def trim(batch: dict[str, torch.Tensor | None]) -> dict[str, torch.Tensor | None]:
    """The same rows without the padding columns none of them needs: L cut to the longest sequence, T to the
    longest response (at least 1), `index` clamped into the shorter sequence (padding positions only)."""
    L = max(int(batch["attention_mask"].sum(1).max()), 1)
    T = max(int(batch["response_mask"].sum(1).max()), 1)
    out = {}
    for key, value in batch.items():
        out[key] = None if value is None else value[:, :L] if key in SEQUENCE_KEYS else value[:, :T]
    out["index"] = out["index"].clamp(max=L - 1)
    return out


def length_sorted_micro_batches(lengths: list[int], size: int) -> list[list[int]]:
    """Row indices cut into micro-batches of `size` after sorting by length (longest first; ties keep their order),
    so each micro-batch holds rows of similar length. Every row appears once."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i:i + size] for i in range(0, len(order), size)]


def grouped_micro_batches(prompt_of_row: list[int], lengths: list[int], size: int) -> list[list[int]]:
    """Like length_sorted_micro_batches, but the rows of one prompt stay next to each other (so that a micro-batch
    holds whole groups of samples where the sizes allow, rlvr.actors.shared_prompt): groups ordered by their
    longest sequence, longest first, rows by length within a group."""
    groups: dict[int, list[int]] = {}
    for i, g in enumerate(prompt_of_row):
        groups.setdefault(g, []).append(i)
    ordered = sorted(groups.values(), key=lambda rows: -max(lengths[i] for i in rows))
    order = [i for rows in ordered for i in sorted(rows, key=lambda i: -lengths[i])]
    return [order[i:i + size] for i in range(0, len(order), size)]


def sequence_lengths(batch: dict[str, torch.Tensor]) -> list[int]:
    return [int(n) for n in batch["attention_mask"].sum(1).tolist()]
