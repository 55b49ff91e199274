"""Direct preference optimisation: sigmoid DPO and Tulu 3's length-normalised `dpo_norm` (sft_dpo.losses.dpo_loss).

    rlvr dpo --config configs/dpo/tiny_cpu.yaml [beta=5 loss_type=dpo_norm ...]

Reference log-probs are computed once, before the policy is loaded, and cached on disk; the reference model is
freed right after. Cache file: `<ref_cache_dir>/<key>.pt` holding, per training pair, the reference model's summed
log-prob of the chosen and of the rejected reply and their token counts. Because sums and counts are both stored,
one cache serves `dpo` and `dpo_norm`. The key hashes
  * the reference model's identity: for a local folder, config.json and the bytes of every weight file (so a
    retrained model in the same folder gets a new key); for a hub name, the name (pin a revision in the name's
    local snapshot for exact keys);
  * the tokenised pairs (token ids and loss masks of every kept pair, in order): this covers the data file, the
    rows kept, the chat template, the tokenizer and the max-length truncation;
  * the dtype the reference ran in.
A second run on the same data and reference (another output_dir, another learning rate) loads the file and never
loads the reference model. With several ranks, each computes a strided shard and the shards are summed.

The loss of a step is the mean over all pairs in the step (all micro-batches, all ranks).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field
from tqdm.auto import tqdm

from core.engine import all_reduce_sum, barrier
from core.logging import get_logger
from core.model_factory import build_model
from core.models import cache_dir, resolve_model
from core.run import TrainResult
from sft_dpo.data import DataConfig, PairExample, examples_digest, load_pair_examples
from sft_dpo.launch import run_stage
from sft_dpo.losses import dpo_loss, sequence_logps
from sft_dpo.sft import pad_right
from sft_dpo.trainer import Objective, PreludeConfig, RunContext

log = get_logger(__name__)


class DPOConfig(PreludeConfig):
    data: DataConfig
    loss_type: Literal["dpo", "dpo_norm"] = Field("dpo_norm", description="sigmoid DPO on summed log-probs, or "
                                                                          "length-normalised (Tulu 3)")
    beta: float = Field(5.0, gt=0, description="KL strength; Tulu 3 / SmolTulu dpo_norm: 5")
    label_smoothing: float = Field(0.0, ge=0, lt=0.5, description="conservative DPO; 0 = off")
    reference_model: str | None = Field(None, description="default: the starting policy (`model`)")
    ref_cache_dir: str | None = Field(None, description="reference log-prob cache; default $RLVR_CACHE/ref_logprobs")
    ref_batch_size: int = Field(4, ge=1, description="pairs per forward when computing reference log-probs")


@dataclass(frozen=True)
class ScoredPair:
    pair: PairExample
    ref_chosen: float
    ref_rejected: float


def model_fingerprint(path: str) -> str:
    """Identity of a model for cache keys: hash of config.json and weight bytes of a local folder, else the name."""
    folder = Path(path)
    if not folder.is_dir():
        return f"hub:{path}"
    h = hashlib.sha256()
    for f in sorted(folder.iterdir()):
        if f.name == "config.json" or f.suffix in (".safetensors", ".bin", ".pt", ".gguf"):
            h.update(f.name.encode())
            with f.open("rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 22), b""):
                    h.update(chunk)
    return h.hexdigest()


def load_reference_model(path: str, ctx: RunContext) -> torch.nn.Module:
    model = build_model("reference", path, dtype=ctx.dtype, device=ctx.torch_device)
    model.config.use_cache = False
    return model


def pair_batch(pairs: list[PairExample], pad_id: int) -> dict[str, torch.Tensor]:
    """Chosen rows then rejected rows, right-padded to one width: one forward scores both."""
    ids = [p.chosen_ids for p in pairs] + [p.rejected_ids for p in pairs]
    masks = [p.chosen_mask for p in pairs] + [p.rejected_mask for p in pairs]
    return {"input_ids": pad_right(ids, pad_id), "attention_mask": pad_right([[1] * len(r) for r in ids], 0),
            "loss_mask": pad_right(masks, 0)}


def reference_logps(ctx: RunContext, cfg: DPOConfig, pairs: list[PairExample]) -> tuple[torch.Tensor, bool]:
    """[N, 2] summed reference log-probs (chosen, rejected), from the cache or computed (then cached).
    Returns (values, cache_hit)."""
    ref_path = cfg.reference_model or ctx.model_path
    if cfg.reference_model:
        ref_path = resolve_model(cfg.reference_model)
    key_src = {"model": model_fingerprint(ref_path), "pairs": examples_digest(pairs), "dtype": ctx.device.param_dtype,
               "version": 1}
    key = hashlib.sha256(json.dumps(key_src, sort_keys=True).encode()).hexdigest()[:24]
    root = Path(cfg.ref_cache_dir) if cfg.ref_cache_dir else cache_dir() / "ref_logprobs"
    file = root / f"{key}.pt"
    if file.is_file():
        cached = torch.load(file, weights_only=True)
        if cached["logps"].shape[0] == len(pairs):
            log.info("reference log-probs: cache hit %s", file)
            return cached["logps"], True
    log.info("reference log-probs: computing for %d pairs with %s (cache %s)", len(pairs), ref_path, file)
    model = load_reference_model(ref_path, ctx)
    pad_id = ctx.tokenizer.pad_token_id if ctx.tokenizer.pad_token_id is not None else ctx.tokenizer.eos_token_id
    out = torch.zeros(len(pairs), 2, dtype=torch.float64)
    mine = list(range(ctx.rank, len(pairs), ctx.world_size))
    bs = cfg.ref_batch_size
    with torch.no_grad():
        for i in tqdm(range(0, len(mine), bs), disable=ctx.rank != 0, desc="reference log-probs", unit="batch"):
            idx = mine[i:i + bs]
            batch = {k: v.to(ctx.torch_device) for k, v in pair_batch([pairs[j] for j in idx], pad_id).items()}
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            sums, _ = sequence_logps(logits, batch["input_ids"], batch["loss_mask"])
            out[idx, 0] = sums[: len(idx)].double().cpu()
            out[idx, 1] = sums[len(idx):].double().cpu()
    del model
    if ctx.device.kind == "cuda":
        torch.cuda.empty_cache()
    out = all_reduce_sum(out.to(ctx.torch_device)).cpu()
    if ctx.rank == 0:
        root.mkdir(parents=True, exist_ok=True)
        tmp = file.with_suffix(f".tmp{os.getpid()}")
        torch.save({"logps": out, "key": key_src}, tmp)
        os.replace(tmp, file)
    barrier()
    return out, False


class DPOObjective(Objective):
    name = "dpo"
    unit = "pairs"

    def __init__(self, cfg: DPOConfig):
        self.cfg = cfg

    def load_examples(self, ctx: RunContext):
        pairs, report = load_pair_examples(self.cfg.data, ctx.tokenizer)
        return pairs, report.as_metrics()

    def before_model(self, ctx: RunContext, examples: list) -> dict[str, float]:
        logps, hit = reference_logps(ctx, self.cfg, examples)
        scored = [ScoredPair(p, float(a), float(b)) for p, (a, b) in zip(examples, logps.tolist())]
        examples[:] = scored  # the loop indexes this list; pairs now carry their reference log-probs
        return {"ref_cache/hit": float(hit)}

    def load_model(self, ctx: RunContext):
        model = build_model("policy", ctx.model_path, dtype=ctx.dtype, lora=self.cfg.lora)
        model.config.use_cache = False
        return model

    def collate(self, examples: list[ScoredPair], pad_id: int):
        batch = pair_batch([e.pair for e in examples], pad_id)
        batch["ref_chosen"] = torch.tensor([e.ref_chosen for e in examples], dtype=torch.float64)
        batch["ref_rejected"] = torch.tensor([e.ref_rejected for e in examples], dtype=torch.float64)
        return batch

    def count(self, batch):
        return int(batch["ref_chosen"].numel()), int(batch["attention_mask"].sum())

    def loss(self, engine, batch):
        n = batch["ref_chosen"].numel()
        logits = engine(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        sums, counts = sequence_logps(logits, batch["input_ids"], batch["loss_mask"])
        losses, stats = dpo_loss(sums[:n], sums[n:], batch["ref_chosen"].to(sums.dtype),
                                 batch["ref_rejected"].to(sums.dtype), beta=self.cfg.beta,
                                 loss_type=self.cfg.loss_type, chosen_tokens=counts[:n], rejected_tokens=counts[n:],
                                 label_smoothing=self.cfg.label_smoothing)
        stats = {k: v.sum() for k, v in stats.items()}
        stats["logps/chosen"] = sums[:n].detach().sum()
        stats["logps/rejected"] = sums[n:].detach().sum()
        return losses.sum(), stats


def train_dpo(cfg: DPOConfig) -> TrainResult:
    """Train (or resume, or return the finished) DPO run described by `cfg`."""
    return run_stage(cfg, "sft_dpo.dpo:DPOObjective")
