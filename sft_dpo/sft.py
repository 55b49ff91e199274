"""Supervised fine-tuning: cross-entropy on assistant tokens only (see sft_dpo.data for masks and truncation).

    rlvr sft --config configs/sft/tiny_cpu.yaml [max_steps=20 optim.lr=1e-4 ...]

The loss of a step is the summed token cross-entropy divided by the number of assistant tokens in the whole step
(all micro-batches, all ranks): each target token weighs the same however the batch is split.
"""

from __future__ import annotations

import torch
from pydantic import Field

from core.model_factory import build_model
from core.run import TrainResult
from sft_dpo.data import DataConfig, load_sft_examples, pack_examples
from sft_dpo.launch import run_stage
from sft_dpo.losses import sft_loss_sum
from sft_dpo.trainer import Objective, PreludeConfig, RunContext


class SFTDataConfig(DataConfig):
    packing: bool = Field(False, description="concatenate examples into max_length sequences (see pack_examples)")


class SFTConfig(PreludeConfig):
    data: SFTDataConfig


def pad_right(rows: list[list[int]], value: int) -> torch.Tensor:
    width = max(len(r) for r in rows)
    return torch.tensor([r + [value] * (width - len(r)) for r in rows], dtype=torch.long)


class SFTObjective(Objective):
    name = "sft"
    unit = "tokens"
    keep_dropout = True  # plain maximum likelihood: the model's own dropout setting applies

    def __init__(self, cfg: SFTConfig):
        self.cfg = cfg

    def load_examples(self, ctx: RunContext):
        examples, report = load_sft_examples(self.cfg.data, ctx.tokenizer)
        if self.cfg.data.packing:
            examples = pack_examples(examples, self.cfg.data.max_length)
        return examples, {**report.as_metrics(), "data/sequences": len(examples)}

    def load_model(self, ctx: RunContext):
        model = build_model("policy", ctx.model_path, dtype=ctx.dtype, lora=self.cfg.lora)
        model.config.use_cache = False
        return model

    def collate(self, examples, pad_id):
        return {"input_ids": pad_right([e.input_ids for e in examples], pad_id),
                "attention_mask": pad_right([[1] * len(e.input_ids) for e in examples], 0),
                "loss_mask": pad_right([e.loss_mask for e in examples], 0)}

    def count(self, batch):
        return int(batch["loss_mask"][:, 1:].sum()), int(batch["attention_mask"].sum())

    def loss(self, engine, batch):
        logits = engine(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        return sft_loss_sum(logits, batch["input_ids"], batch["loss_mask"]), {}


def train_sft(cfg: SFTConfig) -> TrainResult:
    """Train (or resume, or return the finished) SFT run described by `cfg`."""
    return run_stage(cfg, "sft_dpo.sft:SFTObjective")
