"""Greedy generation, with vLLM (in-process engine) or Hugging Face `generate`.

`generate(conversations, max_new_tokens)`: chat messages through the tokenizer's chat template (or a plain
"User:/Assistant:" layout when the model has none); our GSM8K and IFEval protocols. `generate_text(prompts,
max_new_tokens, stop)`: plain-text prompts tokenised as lm-eval does (`rlvr.eval.tokenize`), cut at the stop
strings; lm-eval's GSM8K protocol. Both return the decoded completion without special tokens.
`make_generator(model, backend="auto")` picks vLLM when it imports, else HF.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from typing import Protocol

from core.logging import get_logger
from rlvr.eval.tokenize import encode

log = get_logger(__name__)

Messages = list[dict[str, str]]


class Generator(Protocol):
    def generate(self, conversations: Sequence[Messages], max_new_tokens: int) -> list[str]: ...

    def generate_text(self, prompts: Sequence[str], max_new_tokens: int, stop: Sequence[str] = ()) -> list[str]: ...


def render_prompt(tokenizer, messages: Messages) -> str:
    """The prompt text for `messages`, ending where the assistant's reply starts."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    turns = [f"{m['role'].capitalize()}: {m['content']}" for m in messages]
    return "\n\n".join(turns) + "\n\nAssistant:"


def prompt_ids(tokenizer, messages: Messages) -> list[int]:
    # The chat template already carries any special tokens the model expects.
    text = render_prompt(tokenizer, messages)
    return tokenizer(text, add_special_tokens=not getattr(tokenizer, "chat_template", None))["input_ids"]


class HFGenerator:
    def __init__(self, model_path: str, *, batch_size: int = 8, dtype: str = "float32", device: str | None = None):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from core.device import torch_dtype

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tok = AutoTokenizer.from_pretrained(model_path)
        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch_dtype(dtype)).to(self.device).train(False)
        self.batch_size = batch_size
        self.pad_id = self.tok.pad_token_id if self.tok.pad_token_id is not None else self.tok.eos_token_id

    def generate(self, conversations: Sequence[Messages], max_new_tokens: int) -> list[str]:
        import torch
        from tqdm import tqdm

        encoded = [prompt_ids(self.tok, m) for m in conversations]
        order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
        out: list[str] = [""] * len(encoded)
        starts = range(0, len(order), self.batch_size)
        for start in tqdm(starts, desc="generate (hf)", unit="batch", disable=len(order) <= self.batch_size):
            batch = order[start:start + self.batch_size]
            width = max(len(encoded[i]) for i in batch)
            ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for r, i in enumerate(batch):  # left padding: every prompt ends where generation starts
                ids[r, width - len(encoded[i]):] = torch.tensor(encoded[i])
                mask[r, width - len(encoded[i]):] = 1
            with torch.no_grad():
                gen = self.model.generate(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                                          max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=self.pad_id)
            for r, i in enumerate(batch):
                out[i] = self.tok.decode(gen[r, width:], skip_special_tokens=True)
        return out

    def generate_text(self, prompts: Sequence[str], max_new_tokens: int, stop: Sequence[str] = ()) -> list[str]:
        """Greedy continuations of plain-text prompts (lm-eval's tokenisation, no chat template), each cut at the
        first stop string; generation of a batch ends when every row has produced one (or EOS)."""
        import torch
        from tqdm import tqdm

        keep = max(1, context_length(self.model.config) - max_new_tokens)  # lm-eval's left truncation
        encoded = [encode(self.tok, p)[-keep:] for p in prompts]
        order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
        out: list[str] = [""] * len(encoded)
        starts = range(0, len(order), self.batch_size)
        for start in tqdm(starts, desc="generate (hf)", unit="batch", disable=len(order) <= self.batch_size):
            batch = order[start:start + self.batch_size]
            width = max(len(encoded[i]) for i in batch)
            ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for r, i in enumerate(batch):
                ids[r, width - len(encoded[i]):] = torch.tensor(encoded[i])
                mask[r, width - len(encoded[i]):] = 1
            criteria = stop_in_generated(self.tok, stop, width) if stop else None
            with torch.no_grad():
                gen = self.model.generate(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                                          max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=self.pad_id,
                                          stopping_criteria=criteria)
            for r, i in enumerate(batch):
                out[i] = cut_at_stop(self.tok.decode(gen[r, width:], skip_special_tokens=True), stop)
        return out


def _kv_cache_bytes(model_path: str, max_model_len: int, max_num_seqs: int) -> int:
    """Enough KV cache for max_num_seqs full-length sequences in fp32, between 64 MiB and 4 GiB."""
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(model_path)
    heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    per_token = 2 * cfg.num_hidden_layers * heads * head_dim * 4
    return int(min(max(64 * 2**20, per_token * max_model_len * max_num_seqs), 4 * 2**30))


class VLLMGenerator:
    def __init__(self, model_path: str, *, max_model_len: int = 2048, max_num_seqs: int = 16, seed: int = 0):
        import torch

        # In-process engine: starts in seconds, no __main__ guard needed (see ENVIRONMENT.md).
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        from vllm import LLM

        on_cpu = not torch.cuda.is_available()
        kwargs = {"dtype": "float32", "enforce_eager": True,
                  "kv_cache_memory_bytes": _kv_cache_bytes(model_path, max_model_len, max_num_seqs)} if on_cpu else {}
        self.llm = LLM(model=model_path, max_model_len=max_model_len, max_num_seqs=max_num_seqs, seed=seed,
                       **kwargs)
        self.tok = self.llm.get_tokenizer()
        self.max_model_len = max_model_len

    def generate(self, conversations: Sequence[Messages], max_new_tokens: int) -> list[str]:
        from vllm import SamplingParams

        prompts = []
        for m in conversations:
            ids = prompt_ids(self.tok, m)
            keep = self.max_model_len - max_new_tokens
            if len(ids) > keep:
                log.warning("prompt of %d tokens left-truncated to %d to fit max_model_len", len(ids), keep)
                ids = ids[-keep:]
            prompts.append({"prompt_token_ids": ids})
        params = SamplingParams(temperature=0.0, max_tokens=max_new_tokens, skip_special_tokens=True)
        outputs = self.llm.generate(prompts, params, use_tqdm=True)
        return [o.outputs[0].text for o in outputs]

    def generate_text(self, prompts: Sequence[str], max_new_tokens: int, stop: Sequence[str] = ()) -> list[str]:
        """As `HFGenerator.generate_text`: plain-text prompts, lm-eval's tokenisation, cut at the stop strings."""
        from vllm import SamplingParams

        keep = self.max_model_len - max_new_tokens
        inputs = [{"prompt_token_ids": encode(self.tok, p)[-keep:]} for p in prompts]
        params = SamplingParams(temperature=0.0, max_tokens=max_new_tokens, skip_special_tokens=True,
                                stop=list(stop) or None)
        outputs = self.llm.generate(inputs, params, use_tqdm=True)
        return [cut_at_stop(o.outputs[0].text, stop) for o in outputs]


def context_length(config, default: int = 2048) -> int:
    """The model's context length as lm-eval reads it from the config (n_positions, max_position_embeddings,
    n_ctx), else `default`."""
    for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return default


def stop_in_generated(tok, stop: Sequence[str], prompt_len: int):
    """transformers stopping criteria: a row stops once a stop string appears in its generated text (never across
    the prompt boundary, as lm-eval's criteria; transformers' own `stop_strings` also match a stop string that
    straddles the prompt's end, which can end a generation early)."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    stops = [s for s in stop if s]

    class StopInGenerated(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            texts = tok.batch_decode(input_ids[:, prompt_len:], skip_special_tokens=True)
            return torch.tensor([any(s in t for s in stops) for t in texts], device=input_ids.device)

    return StoppingCriteriaList([StopInGenerated()])


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """`text` up to the first occurrence of each stop string in turn (lm-eval's post-processing)."""
    for term in stop:
        if term:
            text = text.split(term)[0]
    return text


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


def make_generator(model_path: str, backend: str = "auto", *, batch_size: int = 8,
                   max_model_len: int = 2048) -> Generator:
    """backend: "vllm", "hf", or "auto" (vLLM when importable, else HF)."""
    if backend not in ("auto", "vllm", "hf"):
        raise ValueError(f"unknown generation backend {backend!r}; use auto, vllm or hf")
    if backend == "vllm" or (backend == "auto" and vllm_available()):
        if not vllm_available():
            raise RuntimeError("backend 'vllm' requested but vllm is not installed (pip install '.[cpu]' or '.[gpu]')")
        log.info("generation backend: vLLM")
        return VLLMGenerator(model_path, max_model_len=max_model_len, max_num_seqs=max(batch_size, 1))
    log.info("generation backend: Hugging Face transformers")
    return HFGenerator(model_path, batch_size=batch_size)
