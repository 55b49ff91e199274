"""Greedy generation for evaluation, on the RL generator's engine: `EvalGenerator` drives
rlvr.actors.generator.Generator (vLLM in-process, or Hugging Face models with our own decoding loop), so evaluation
and training stop at the same tokens (core.tokens.stop_token_ids) and size vLLM's KV cache the same way.

- `generate(conversations, max_new_tokens)`: chat messages through the one chat tokeniser (core.tokens.chat_ids: the
  chat template, or a plain "User:/Assistant:" layout when the model has none); our GSM8K and IFEval protocols.
- `generate_text(prompts, max_new_tokens, stop)`: plain-text prompts tokenised as lm-eval does (rlvr.eval.tokenize),
  generation ended by the stop strings too and the text cut at them; lm-eval's GSM8K protocol.
Both return the decoded completion without special tokens. Prompts longer than the context left for
`max_new_tokens` keep their last tokens (lm-eval's left truncation). The context is `max_model_len` with vLLM and
the model's own context length with HF (as lm-eval's HFLM reads it: `context_length`).
`make_generator(model, backend="auto")` picks vLLM when it imports, else HF.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch
from tqdm import tqdm
from transformers import AutoConfig

from core.device import default_threads
from core.logging import get_logger
from core.tokens import chat_ids
from rlvr.actors.generator import Generator, Rollout, vllm_available
from rlvr.eval.tokenize import encode

log = get_logger(__name__)

Messages = list[dict[str, str]]


class TextGenerator(Protocol):
    """What the generative tasks need (tests pass stubs)."""

    def generate(self, conversations: Sequence[Messages], max_new_tokens: int) -> list[str]: ...

    def generate_text(self, prompts: Sequence[str], max_new_tokens: int, stop: Sequence[str] = ()) -> list[str]: ...


def context_length(config, default: int = 2048) -> int:
    """The model's context length as lm-eval reads it from the config (n_positions, max_position_embeddings,
    n_ctx), else `default`."""
    for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return default


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """`text` up to the first occurrence of each stop string in turn (lm-eval's post-processing)."""
    for term in stop:
        if term:
            text = text.split(term)[0]
    return text


class EvalGenerator:
    """Greedy decoding of whole evaluation sets on one Generator engine."""

    def __init__(self, model_path: str, *, backend: str = "hf", batch_size: int = 8, max_model_len: int = 2048):
        if backend == "hf":
            max_model_len = context_length(AutoConfig.from_pretrained(model_path))  # lm-eval's truncation
        on_gpu = torch.cuda.is_available()
        self.engine = Generator(model_path, backend=backend, max_model_len=max_model_len,
                                max_num_seqs=max(batch_size, 1), threads=default_threads(),
                                gpu_memory_utilization=0.9, enforce_eager=not on_gpu,
                                dtype="float32" if backend == "hf" else None)  # HF: fp32 as lm-eval's HFLM
        self.batch_size = batch_size

    @property
    def tok(self):
        return self.engine.tokenizer

    @property
    def model(self):
        """The Hugging Face model (HF backend)."""
        return self.engine.model

    @property
    def pad_id(self) -> int:
        return self.engine.pad_id

    def generate(self, conversations: Sequence[Messages], max_new_tokens: int) -> list[str]:
        prompts = [self._fit(chat_ids(self.tok, m), max_new_tokens) for m in conversations]
        return [self.tok.decode(r.response_ids, skip_special_tokens=True) for r in self._run(prompts, max_new_tokens)]

    def generate_text(self, prompts: Sequence[str], max_new_tokens: int, stop: Sequence[str] = ()) -> list[str]:
        """Greedy continuations of plain-text prompts (lm-eval's tokenisation, no chat template), each cut at the
        first stop string; a row's generation ends at a stop string, a stop token or max_new_tokens."""
        ids = [self._fit(encode(self.tok, p), max_new_tokens, quiet=True) for p in prompts]
        return [cut_at_stop(self.tok.decode(r.response_ids, skip_special_tokens=True), stop)
                for r in self._run(ids, max_new_tokens, stop)]

    def _fit(self, ids: list[int], max_new_tokens: int, *, quiet: bool = False) -> list[int]:
        keep = max(1, self.engine.max_model_len - max_new_tokens)
        if len(ids) > keep and not quiet:
            log.warning("prompt of %d tokens left-truncated to %d to fit the context", len(ids), keep)
        return ids[-keep:]

    def _run(self, prompts: list[list[int]], max_new_tokens: int, stop: Sequence[str] = ()) -> list[Rollout]:
        """vLLM schedules the whole set itself; HF decodes batches of batch_size, longest prompts first."""
        if self.engine.backend == "vllm":
            return self.engine.generate(prompts, [0] * len(prompts), max_new_tokens=max_new_tokens,
                                        temperature=0.0, stop=stop)
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        out: list[Rollout | None] = [None] * len(prompts)
        starts = range(0, len(order), self.batch_size)
        for start in tqdm(starts, desc="generate (hf)", unit="batch", disable=len(order) <= self.batch_size):
            batch = order[start:start + self.batch_size]
            rollouts = self.engine.generate([prompts[i] for i in batch], [0] * len(batch),
                                            max_new_tokens=max_new_tokens, temperature=0.0, stop=stop)
            for i, rollout in zip(batch, rollouts):
                out[i] = rollout
        return out


def make_generator(model_path: str, backend: str = "auto", *, batch_size: int = 8,
                   max_model_len: int = 2048) -> EvalGenerator:
    """backend: "vllm", "hf", or "auto" (vLLM when importable, else HF)."""
    if backend not in ("auto", "vllm", "hf"):
        raise ValueError(f"unknown generation backend {backend!r}; use auto, vllm or hf")
    if backend == "vllm" and not vllm_available():
        raise RuntimeError("backend 'vllm' requested but vllm is not installed (pip install '.[cpu]' or '.[gpu]')")
    backend = "vllm" if backend == "vllm" or (backend == "auto" and vllm_available()) else "hf"
    log.info("generation backend: %s", "vLLM" if backend == "vllm" else "Hugging Face transformers")
    return EvalGenerator(model_path, backend=backend, batch_size=batch_size, max_model_len=max_model_len)
