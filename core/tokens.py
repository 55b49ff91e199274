"""How prompts become tokens and where a response ends: one rule each, for every backend and every stage.

Prompts: `chat_ids(tokenizer, messages)` is the one chat tokeniser (RL prompts when they are loaded, evaluation
conversations, the weight-sync probe, SFT/DPO conversations): the chat template renders the text and carries every
special token the model expects, so the tokenizer adds none; a tokenizer without a template gets a plain
"User: ... Assistant:" layout with its default special tokens (a BOS where it adds one).

Where a response ends:

A chat model ends its turn with the chat template's end-of-turn token (`<|im_end|>` in ChatML, `<|eot_id|>` in
Llama 3), which is often *not* `tokenizer.eos_token` (SmolLM2's base tokenizer has `<|endoftext|>` as EOS). A
generator that stops only at `tokenizer.eos_token_id` lets such a model run to max length after every answer, and
RLVR then pays the no-EOS penalty on every response. So generation stops at, and a response counts as finished
when it ends with, any of:
  - the chat template's end-of-turn token (found by rendering a probe conversation),
  - `tokenizer.eos_token_id`,
  - every id in the model's `generation_config.eos_token_id` (an int or a list).
SFT writes that set into the saved model's generation_config, so later stages and other tools (vLLM, HF
`generate`) stop at the end of the turn too.
"""

from __future__ import annotations

from typing import Any

from jinja2 import TemplateError

_PROBE = "rlvr-end-of-turn-probe"


def chat_ids(tokenizer, messages: list[dict[str, str]], *, add_generation_prompt: bool = True,
             chat_template: str | None = None) -> list[int]:
    """Token ids of `messages` as the model sees them: rendered with the chat template (`chat_template` overrides
    the tokenizer's), ending with the assistant's turn opening when `add_generation_prompt`."""
    template = chat_template or getattr(tokenizer, "chat_template", None)
    if template:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt,
                                             chat_template=template)
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])
    turns = [f"{m['role'].capitalize()}: {m['content']}" for m in messages]
    text = "\n\n".join(turns) + ("\n\nAssistant:" if add_generation_prompt else "")
    return list(tokenizer(text)["input_ids"])


def end_of_turn_token_id(tokenizer) -> int | None:
    """The special token the chat template puts right after an assistant message, or None (no template, or the
    template closes a turn with plain text)."""
    if not getattr(tokenizer, "chat_template", None):
        return None
    conversation = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": _PROBE}]
    try:
        text = tokenizer.apply_chat_template(conversation, tokenize=False)
    except (TemplateError, ValueError, KeyError, TypeError):  # templates that reject this shape of conversation
        return None
    at = text.rfind(_PROBE)
    if at < 0:
        return None
    tail = text[at + len(_PROBE):]
    ids = tokenizer(tail, add_special_tokens=False)["input_ids"] if tail else []
    if not ids:
        return None
    special = set(tokenizer.all_special_ids) | {
        i for i, t in getattr(tokenizer, "added_tokens_decoder", {}).items() if getattr(t, "special", False)}
    return ids[0] if ids[0] in special else None


def _as_list(value: Any) -> list[int]:
    if value is None:
        return []
    return [int(v) for v in value] if isinstance(value, (list, tuple, set)) else [int(value)]


def stop_token_ids(tokenizer, generation_config=None) -> list[int]:
    """Every token id that ends a response (sorted): end-of-turn, the tokenizer's EOS, generation_config's EOS."""
    ids = set(_as_list(getattr(generation_config, "eos_token_id", None)))
    ids.update(_as_list(getattr(tokenizer, "eos_token_id", None)))
    ids.update(_as_list(end_of_turn_token_id(tokenizer)))
    return sorted(ids)


def set_stop_tokens(model, tokenizer) -> list[int]:
    """Write the stop set into `model.generation_config.eos_token_id` (end-of-turn first, so tools that read
    one id take that one). Returns the list written."""
    ids = stop_token_ids(tokenizer, getattr(model, "generation_config", None))
    eot = end_of_turn_token_id(tokenizer)
    ordered = ([eot] if eot is not None else []) + [i for i in ids if i != eot]
    if getattr(model, "generation_config", None) is not None and ordered:
        model.generation_config.eos_token_id = ordered if len(ordered) > 1 else ordered[0]
    return ordered
