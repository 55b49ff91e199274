"""Log-likelihood of continuations given contexts, with batched Hugging Face forward passes.

Tokenisation follows lm-eval 0.4.x (HFLM): trailing whitespace of the context moves to the continuation, the pair is
tokenised as one string and the continuation tokens are those after the context's tokens, so a word boundary
tokenises as the model saw it in training; special tokens (a BOS) are added when the tokenizer adds them by
default; an empty context is the BOS token (EOS when there is no BOS). Over-long pairs are truncated from the
left (the continuation is always kept; lm-eval keeps one more context token there).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tqdm import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer

from core.device import torch_dtype
from core.logging import get_logger
from rlvr.eval.tokenize import encode, prefix_token_id

log = get_logger(__name__)


def continuation_logprob(logits: torch.Tensor, input_ids: torch.Tensor, cont_lens: Sequence[int],
                         seq_lens: Sequence[int]) -> torch.Tensor:
    """Summed log-probability of the last `cont_lens[b]` real tokens of each row.

    logits: [B, T, V] from a causal LM on `input_ids` [B, T] (right-padded; row b has `seq_lens[b]` real tokens).
    Returns [B] float32: sum over the continuation tokens t of log p(input_ids[b, t] | input_ids[b, :t]).
    """
    out = torch.empty(len(cont_lens), dtype=torch.float32)
    for b, (c, s) in enumerate(zip(cont_lens, seq_lens)):
        if c < 1 or c >= s + 1:
            raise ValueError(f"row {b}: continuation length {c} with sequence length {s}")
        # logits at position t predict token t + 1: positions s-c-1 .. s-2 predict tokens s-c .. s-1
        rows = logits[b, s - c - 1:s - 1].float().log_softmax(-1)
        targets = input_ids[b, s - c:s]
        out[b] = rows.gather(-1, targets.unsqueeze(-1)).sum()
    return out


class LoglikScorer:
    """`scorer(pairs) -> [log p(continuation | context)]` for a causal LM folder or hub name."""

    def __init__(self, model, tokenizer, *, batch_size: int = 16, max_length: int | None = None,
                 device: str = "cpu", progress: bool = False, add_special_tokens: bool | None = None):
        self.model = model.train(False)
        self.add_special_tokens = add_special_tokens  # None: the tokenizer's default, as lm-eval
        self.progress = progress
        self.tok = tokenizer
        self.batch_size = batch_size
        self.device = device
        limit = getattr(model.config, "max_position_embeddings", None) or 2048
        self.max_length = min(max_length or limit, limit)

    @classmethod
    def from_pretrained(cls, name_or_path: str, *, batch_size: int = 16, dtype: str = "float32",
                        device: str | None = None, progress: bool = False,
                        add_special_tokens: bool | None = None) -> LoglikScorer:
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        tok = AutoTokenizer.from_pretrained(name_or_path)
        model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=torch_dtype(dtype)).to(device)
        return cls(model, tok, batch_size=batch_size, device=device, progress=progress,
                   add_special_tokens=add_special_tokens)

    def encode_pair(self, context: str, continuation: str) -> tuple[list[int], int]:
        """Token ids of context+continuation (left-truncated to max_length) and the continuation's token count,
        by lm-eval's rule: special tokens as the tokenizer adds them by default (`rlvr.eval.tokenize.encode`), and
        an empty context becomes the prefix token (BOS if defined, else EOS) unless the continuation already
        starts with it."""
        if not context:
            cont = self.tok(continuation, add_special_tokens=False)["input_ids"]
            prefix = prefix_token_id(self.tok)
            ids, n_cont = ([prefix, *cont], len(cont)) if not cont or cont[0] != prefix else (cont, len(cont) - 1)
        else:
            n_spaces = len(context) - len(context.rstrip())
            if n_spaces:
                context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
            ids = encode(self.tok, context + continuation, self.add_special_tokens)
            n_cont = len(ids) - len(encode(self.tok, context, self.add_special_tokens))
        if n_cont < 1:
            raise ValueError(f"continuation {continuation!r} produced no tokens after context {context[-40:]!r}")
        ids = ids[-self.max_length:]
        return ids, min(n_cont, len(ids) - 1)

    @torch.no_grad()
    def __call__(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        encoded = [self.encode_pair(c, x) for c, x in pairs]
        order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i][0]))  # similar lengths batch together
        scores = [0.0] * len(encoded)
        pad = self.tok.pad_token_id if self.tok.pad_token_id is not None else 0
        batches = [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        if self.progress:
            batches = tqdm(batches, desc="log-likelihood", unit="batch")
        for batch in batches:
            seqs = [encoded[i][0] for i in batch]
            width = max(len(s) for s in seqs)
            ids = torch.full((len(seqs), width), pad, dtype=torch.long)
            mask = torch.zeros((len(seqs), width), dtype=torch.long)
            for r, s in enumerate(seqs):
                ids[r, :len(s)] = torch.tensor(s)
                mask[r, :len(s)] = 1
            logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).logits.cpu()
            lp = continuation_logprob(logits, ids, [encoded[i][1] for i in batch], [len(s) for s in seqs])
            for r, i in enumerate(batch):
                scores[i] = float(lp[r])
        return scores
