"""The per-token value model: a `*ForSequenceClassification(num_labels=1)` backbone and its linear score head read
on every position (input_ids -> [B, T]). The reward model trains one (sft_dpo.reward_model: the saved form, the
Bradley-Terry loss); PPO's critic is one (rlvr.actors.learner), started from the reward model or from the policy
folder (then the head is new). Built for training through core.model_factory.build_model (roles critic, reward).
"""

from __future__ import annotations

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer


def last_token_values(values: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Pick each row's value at its last attended token (right padding). values [B,T], mask [B,T] -> [B]."""
    last = attention_mask.long().sum(-1).clamp(min=1) - 1
    return values.gather(-1, last.unsqueeze(-1)).squeeze(-1)


class ValueModel(torch.nn.Module):
    """A sequence-classification model (num_labels=1) read as per-token values: input_ids -> [B, T]."""

    def __init__(self, seq_cls_model):
        super().__init__()
        self.hf = seq_cls_model
        if not isinstance(getattr(seq_cls_model, "score", None), torch.nn.Module):
            raise ValueError(f"{type(seq_cls_model).__name__} has no `score` head; only Llama-style "
                             "*ForSequenceClassification models are supported")

    @property
    def _adapted(self) -> torch.nn.Module:
        """The Hugging Face model itself: `hf`, or the model inside it when `hf` is a peft (LoRA) model."""
        from peft import PeftModel  # lazy: only LoRA runs wrap the model

        return self.hf.get_base_model() if isinstance(self.hf, PeftModel) else self.hf

    @property
    def backbone(self) -> torch.nn.Module:
        return getattr(self._adapted, self._adapted.base_model_prefix)

    @property
    def head(self) -> torch.nn.Module:
        return self._adapted.score

    @property
    def config(self):
        return self.hf.config

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.head(hidden).squeeze(-1).float()

    def score_sequences(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return last_token_values(self(input_ids, attention_mask), attention_mask)

    def gradient_checkpointing_enable(self, **kwargs):
        self.hf.gradient_checkpointing_enable(**kwargs)


def load_value_model(path: str, *, dtype: torch.dtype = torch.float32,
                     attn_implementation: str | None = None) -> ValueModel:
    """A reward-model folder (or a causal-LM folder: new head) as a per-token value model. See module docstring.
    Training stages build it through core.model_factory.build_model (roles critic and reward: LoRA there)."""
    extra = {} if attn_implementation is None else {"attn_implementation": attn_implementation}
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=dtype, **extra)
    if model.config.pad_token_id is None:
        tok = AutoTokenizer.from_pretrained(path)
        model.config.pad_token_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    model.config.use_cache = False
    return ValueModel(model)
