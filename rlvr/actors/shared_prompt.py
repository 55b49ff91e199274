"""One forward pass per prompt for all of its samples: the learner's log-probs of a group's responses without
recomputing the prompt they share (GRPO/RLOO sample several responses per prompt; the prompt is often longer than
a response, so most of a group's tokens are copies of it).

For a micro-batch whose rows share prompts (rlvr.actors.batch layout), each distinct prompt and the responses of
its samples are packed into one row, with no padding between them:

    [prompt of g | response of sample a | response of sample b | ...]      one row per prompt g

Position ids restart at the prompt's length for every response, and a 4D attention mask lets a prompt token see
the prompt causally and a response token see the whole prompt and the earlier tokens of its own response (never
another sample's). One pass over G rows then gives the hidden state before every response token: the prompt's last position
predicts each sample's first token, a response token the next one. They equal those of the plain pass over
each full sequence up to float rounding, and the gradient is the same: every sample's loss reaches the shared
prompt's activations and is summed there by the backward pass.

Against a KV-cache formulation (prompt pass, cache copied to the samples, response pass) this is one forward
instead of two, each weight's gradient is one matmul over all of the row's tokens rather than two thin ones, and
nothing is copied: on SmolLM2 at 4 samples of ~60 tokens per ~100-token prompt, that is the faster learner step
(bench/rlvr_step.py). It needs no KV cache, so it also runs under gradient checkpointing (tested) and ZeRO-3
(one plain forward; not yet run on a GPU). Padding positions (between rows of different lengths) attend only
to themselves, so no query row is fully masked (a NaN that the backward would spread into the weight
gradients). The critic (a sequence classifier) always runs the
plain pass; attention implementations that cannot take a 4D mask (flash-attention) are not shared.

Segmented attention: under SDPA the 4D mask alone would make each packed row's attention a dense N x N product
of which most is masked away (a response sees the prompt and itself, not the other responses: with 4 responses
of ~140 tokens after a 130-token prompt, a third of the N x N block is needed). `use_segmented_attention` switches a
model to the attention implementation "rlvr_segmented_sdpa" (registered with transformers' AttentionInterface in
this module): for a pass that brings `shared_prompt_segments` it computes, per packed row, the prompt causally and
each response against [prompt keys | its own keys] with SDPA; any other call (no segments) is plain SDPA.
The result is the masked pass's up to float rounding (tests/rlvr/test_shared_prompt.py); a model
switched this way saves and loads as usual (the implementation is not written into config.json).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

SEGMENTED_ATTENTION = "rlvr_segmented_sdpa"


def segmented_sdpa_attention(module, query, key, value, attention_mask, dropout: float = 0.0,
                             scaling: float | None = None, shared_prompt_segments=None, **kwargs):
    """transformers' attention-function signature (query [G, H, N, D], key/value [G, H_kv, N, D]) -> output
    [G, N, H, D]. `shared_prompt_segments`: per packed row, (prompt length, [(start, end) of each response]),
    the spans back to back after the prompt; positions after the last span are padding (output 0)."""
    if shared_prompt_segments is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    rep = query.shape[1] // key.shape[1]
    key, value = repeat_kv(key, rep), repeat_kv(value, rep)
    G, H, N, D = query.shape
    p_drop = dropout if module.training else 0.0
    rows = []
    for g, (prompt_len, spans) in enumerate(shared_prompt_segments):
        q, k, v = query[g:g + 1], key[g:g + 1], value[g:g + 1]
        kp, vp = k[:, :, :prompt_len], v[:, :, :prompt_len]
        parts = [F.scaled_dot_product_attention(q[:, :, :prompt_len], kp, vp, dropout_p=p_drop, is_causal=True,
                                                scale=scaling)]
        for start, end in spans:
            n = end - start
            allowed = torch.ones((n, prompt_len + n), dtype=torch.bool, device=q.device).tril(prompt_len)
            parts.append(F.scaled_dot_product_attention(
                q[:, :, start:end], torch.cat([kp, k[:, :, start:end]], 2), torch.cat([vp, v[:, :, start:end]], 2),
                attn_mask=allowed, dropout_p=p_drop, scale=scaling))
        used = spans[-1][1] if spans else prompt_len
        if used < N:
            parts.append(query.new_zeros((1, H, N - used, D)))
        rows.append(torch.cat(parts, 2))
    return torch.cat(rows, 0).transpose(1, 2).contiguous(), None


AttentionInterface.register(SEGMENTED_ATTENTION, segmented_sdpa_attention)
AttentionMaskInterface.register(SEGMENTED_ATTENTION, sdpa_mask)


def use_segmented_attention(model) -> bool:
    """Switch `model` (a Hugging Face model, peft-wrapped or not) from SDPA to the segmented implementation;
    False (unchanged) when it uses another one."""
    config = getattr(model, "config", None)
    impl = getattr(config, "_attn_implementation", None)
    if impl == SEGMENTED_ATTENTION:
        return True
    if impl != "sdpa":
        return False
    config._attn_implementation = SEGMENTED_ATTENTION
    return True


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


def supports_packing(model) -> bool:
    """Whether `model`'s attention takes a custom 4D mask (eager and SDPA do; flash-attention does not)."""
    impl = getattr(getattr(model, "config", None), "_attn_implementation", None) or "sdpa"
    return impl in ("sdpa", "eager", SEGMENTED_ATTENTION)


def packed_layout(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The packed rows of a micro-batch (one per distinct prompt) as index tensors:
    tokens, positions, owner [G, N]: token ids, position ids, and which sample a token belongs to (-1: the prompt,
    -2: padding); row [b]: the packed row of each sample; index [b, T]: the position in its row whose logits
    predict the sample's response token t (padding tokens of the response point at the prompt's last position);
    segments (a list, not a tensor): per row, (prompt length, [(start, end) of each response's span])."""
    unique, group = prompt_groups(batch)
    resp_len = batch["response_mask"].sum(1).long().tolist()
    b, T = batch["response_ids"].shape
    rows_tokens, rows_pos, rows_owner, segments = [], [], [], []
    index = torch.zeros((b, T), dtype=torch.long)
    for g, prompt in enumerate(unique):
        P = len(prompt)
        tokens, pos, owner, spans = list(prompt), list(range(P)), [-1] * P, []
        for s in (group == g).nonzero().flatten().tolist():
            r = resp_len[s]
            start = len(tokens)
            tokens += batch["response_ids"][s, : max(r - 1, 0)].tolist()  # the last token predicts nothing
            pos += range(P, P + max(r - 1, 0))
            owner += [s] * max(r - 1, 0)
            if r > 1:
                spans.append((start, start + r - 1))
            index[s] = P - 1
            if r > 1:
                index[s, 1:r] = torch.arange(start, start + r - 1)
        rows_tokens.append(tokens)
        rows_pos.append(pos)
        rows_owner.append(owner)
        segments.append((P, spans))
    N = max(len(t) for t in rows_tokens)
    G = len(unique)
    out = {"tokens": torch.zeros((G, N), dtype=torch.long), "positions": torch.zeros((G, N), dtype=torch.long),
           "owner": torch.full((G, N), -2, dtype=torch.long), "row": group.cpu(), "index": index, "segments": segments}
    for g in range(G):
        n = len(rows_tokens[g])
        out["tokens"][g, :n] = torch.tensor(rows_tokens[g])
        out["positions"][g, :n] = torch.tensor(rows_pos[g])
        out["owner"][g, :n] = torch.tensor(rows_owner[g])
    return out


def packed_attention_mask(positions: torch.Tensor, owner: torch.Tensor) -> torch.Tensor:
    """[G, 1, N, N] bool, True where query j may attend to key i: both real, key not later than the query, and the
    key is the prompt's or the query's own sample's; a padding query attends to itself only."""
    q_pos, k_pos = positions[:, :, None], positions[:, None, :]
    q_own, k_own = owner[:, :, None], owner[:, None, :]
    real_q, real_k = q_own != -2, k_own != -2
    allowed = real_q & real_k & (k_pos <= q_pos) & ((k_own == -1) | (k_own == q_own))
    eye = torch.eye(owner.shape[1], dtype=torch.bool, device=owner.device)[None]
    return (allowed | (eye & ~real_q))[:, None]


def shared_prompt_hidden(decoder, batch: dict[str, torch.Tensor], pad_id: int) -> torch.Tensor:
    """The final hidden states at the positions that predict each row's valid response tokens [n, H] (n: the
    micro-batch's response tokens, row-major), each prompt computed once in a packed row with its samples'
    responses (module docstring). `decoder`: the model body (`get_decoder()`, final norm included); `pad_id`
    fills the packed rows' padding."""
    dev = batch["input_ids"].device
    layout = {k: v.to(dev) if torch.is_tensor(v) else v for k, v in packed_layout(batch).items()}
    tokens = layout["tokens"].masked_fill(layout["owner"] == -2, pad_id)
    mask = packed_attention_mask(layout["positions"], layout["owner"])
    if getattr(decoder.config, "_attn_implementation", None) == "eager":  # eager adds its mask to the scores
        dtype = next(decoder.parameters()).dtype
        mask = torch.zeros(mask.shape, dtype=dtype, device=dev).masked_fill(~mask, torch.finfo(dtype).min)
    hidden = decoder(input_ids=tokens, attention_mask=mask, position_ids=layout["positions"],
                     shared_prompt_segments=layout["segments"]).last_hidden_state
    valid = batch["response_mask"].bool()
    rows = layout["row"][:, None].expand_as(valid)[valid]
    return hidden[rows, layout["index"][valid]]


def duplicate_prompt_lengths(batch: dict[str, torch.Tensor]) -> list[int]:
    """Lengths of the prompt copies the shared pass does not compute (all but the first row of each prompt)."""
    unique, group = prompt_groups(batch)
    counts = torch.bincount(group, minlength=len(unique)).tolist()
    return [len(p) for p, c in zip(unique, counts) for _ in range(c - 1)]
