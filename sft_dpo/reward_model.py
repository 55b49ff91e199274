"""Bradley-Terry reward model, saved so that the RL stage can start its PPO value model from it.

    rlvr rm --config configs/rm/tiny_cpu.yaml

Model: `AutoModelForSequenceClassification(num_labels=1)` on top of the SFT model (the score head starts random).
Training wraps it in `ValueModel`, which runs the backbone and the linear score head on every position, giving
per-token values [B, T]; the reward of a sequence is the value at its last attended token (right padding), so
no pad-token-id guessing is involved. Loss per pair: -log σ(r_chosen - r_rejected), averaged over all pairs of a
step. Held-out accuracy: on `eval_path` if given, else on an `eval_fraction` of the pairs split off by seed.

Saved form (`<output_dir>/final`): a plain Hugging Face sequence-classification folder
(`LlamaForSequenceClassification` for SmolLM2: backbone weights under `model.`, head `score.weight` [1, hidden]),
config with num_labels=1 and pad_token_id set, plus the tokenizer. Load it either way:

  * `load_value_model(path)` -> `ValueModel`: `values = vm(input_ids, attention_mask)` is [B, T] (PPO values);
    `vm.score_sequences(input_ids, attention_mask)` is [B] (rewards at the last token). Works on an RM folder or
    on a causal-LM folder (then the head is freshly initialised, as for a value model started from the policy).
  * `AutoModelForTokenClassification.from_pretrained(path, num_labels=1)` also reads it (same `model.` and
    `score.` names for Llama-family models) and returns logits [B, T, 1].
"""

from __future__ import annotations

import random

import torch
from pydantic import Field

from core.engine import all_reduce_sum
from core.logging import get_logger
from core.model_factory import build_model
from core.run import TrainResult
from core.value_model import ValueModel, load_value_model  # noqa: F401  (re-exported: sft_dpo's API)
from sft_dpo.data import DataConfig, load_pair_examples
from sft_dpo.dpo import pair_batch
from sft_dpo.launch import run_stage
from sft_dpo.losses import bradley_terry_loss, last_token_values
from sft_dpo.trainer import Objective, PreludeConfig, RunContext

log = get_logger(__name__)


class RMDataConfig(DataConfig):
    eval_path: str | list[str] | None = Field(None, description="held-out preference pairs (same formats)")
    eval_fraction: float = Field(0.1, ge=0, lt=1, description="without eval_path: pairs held out from `path`")


class RMConfig(PreludeConfig):
    data: RMDataConfig
    eval_batch_size: int = Field(8, ge=1)


def _split(pairs: list, fraction: float, seed: int) -> tuple[list, list]:
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    n_eval = int(round(fraction * len(pairs)))
    held = set(order[:n_eval])
    return [p for i, p in enumerate(pairs) if i not in held], [pairs[i] for i in sorted(held)]


class RMObjective(Objective):
    name = "rm"
    unit = "pairs"

    def __init__(self, cfg: RMConfig):
        self.cfg = cfg
        self.eval_pairs: list = []

    def load_examples(self, ctx: RunContext):
        pairs, report = load_pair_examples(self.cfg.data, ctx.tokenizer)
        metrics = report.as_metrics()
        if self.cfg.data.eval_path is not None:
            eval_cfg = self.cfg.data.model_copy(update={"path": self.cfg.data.eval_path, "max_samples": None})
            self.eval_pairs, eval_report = load_pair_examples(eval_cfg, ctx.tokenizer)
            metrics.update(eval_report.as_metrics("eval_data"))
        elif self.cfg.data.eval_fraction > 0:
            pairs, self.eval_pairs = _split(pairs, self.cfg.data.eval_fraction, self.cfg.seed)
        metrics["eval_data/pairs"] = len(self.eval_pairs)
        return pairs, metrics

    def load_model(self, ctx: RunContext):
        return build_model("reward", ctx.model_path, dtype=ctx.dtype, lora=self.cfg.lora)

    def collate(self, examples, pad_id):
        return pair_batch(examples, pad_id)

    def count(self, batch):
        return batch["input_ids"].shape[0] // 2, int(batch["attention_mask"].sum())

    def _scores(self, model, batch) -> tuple[torch.Tensor, torch.Tensor]:
        n = batch["input_ids"].shape[0] // 2
        values = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        scores = last_token_values(values, batch["attention_mask"])
        return scores[:n], scores[n:]

    def loss(self, engine, batch):
        losses, stats = bradley_terry_loss(*self._scores(engine, batch))
        return losses.sum(), {k: v.sum() for k, v in stats.items()}

    def hf_model(self, module):
        return module._adapted

    def hf_state_dict(self, state_dict):
        return {k[len("hf."):]: v for k, v in state_dict.items() if k.startswith("hf.")}

    def after_training(self, ctx: RunContext, engine) -> dict[str, float]:
        """Held-out accuracy and loss. Every rank scores every held-out pair (ZeRO-3 needs all ranks in each
        forward); only the counts are reduced."""
        if not self.eval_pairs:
            return {}
        pad_id = ctx.tokenizer.pad_token_id if ctx.tokenizer.pad_token_id is not None else ctx.tokenizer.eos_token_id
        engine.eval()
        correct = loss = 0.0
        with torch.no_grad():
            for i in range(0, len(self.eval_pairs), self.cfg.eval_batch_size):
                batch = pair_batch(self.eval_pairs[i:i + self.cfg.eval_batch_size], pad_id)
                batch = {k: v.to(ctx.torch_device) for k, v in batch.items()}
                losses, stats = bradley_terry_loss(*self._scores(engine, batch))
                correct += float(stats["accuracy"].sum())
                loss += float(losses.sum())
        engine.train()
        n = len(self.eval_pairs)
        totals = all_reduce_sum(torch.tensor([correct, loss], dtype=torch.float64, device=ctx.torch_device))
        totals = totals.cpu() / ctx.world_size  # identical on every rank
        return {"eval/accuracy": totals[0].item() / n, "eval/loss": totals[1].item() / n, "eval/pairs": n}


def train_reward_model(cfg: RMConfig) -> TrainResult:
    """Train (or resume, or return the finished) reward-model run described by `cfg`."""
    return run_stage(cfg, "sft_dpo.reward_model:RMObjective")
