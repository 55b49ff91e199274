"""Tokenisation as lm-evaluation-harness 0.4.x's HFLM does it, so our requests match lm-eval's token for token.

- `encode(tok, text)`: the tokenizer's default special tokens (`add_special_tokens=True`: a BOS for Llama,
  Mistral or Gemma-style tokenizers, nothing for GPT-2/SmolLM-style ones), except when the text already starts with
  the prefix token's text (then none are added, so a BOS is never doubled). `add_special_tokens=True/False` forces
  it, as lm-eval's `add_bos_token` model argument does.
- `prefix_token_id(tok)`: the token an empty context is replaced by: BOS when the tokenizer defines one, else EOS.
No torch here: the generation and log-likelihood modules share it.
"""

from __future__ import annotations


def prefix_token_id(tok) -> int:
    return tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id


def encode(tok, text: str, add_special_tokens: bool | None = None) -> list[int]:
    if add_special_tokens is None:
        prefix = tok.decode([prefix_token_id(tok)])
        add_special_tokens = not (prefix and text.startswith(prefix))
    return tok(text, add_special_tokens=add_special_tokens)["input_ids"]
