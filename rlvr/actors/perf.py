"""What the learner reports about its own speed and memory: the useful FLOPs of its forward and backward passes
(so the step's FLOP/s can be set against the CPU's matmul peak, core.device.matmul_peak_flop_per_s), and the peak
resident memory of the process.

FLOPs are counted from the model's shapes, on real tokens only (padding is computed but not counted, so padding
waste shows up as a lower rate):
    forward  2 * body * tokens                 every Linear of the network but the output projection
           + 2 * head * response tokens        the output projection (vocabulary x hidden), response positions only
           + 2 * attn * sum_seq n * (n + 1)    causal attention: QK^T and AV over n(n+1)/2 query-key pairs, with
                                               attn = layers x heads x head_dim
    forward + backward = 3 x forward (the backward computes gradients of the activations and of the weights).
The value model's scalar head counts in `body`. Embedding look-ups, norms, activations and the optimiser step are
not counted (they are not matmuls); their time is in the denominator.
"""

from __future__ import annotations

import resource
import sys
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class FlopModel:
    body: int  # weights of every Linear except the output projection
    head: int  # weights of the output projection (0: none, e.g. the critic)
    attn: int  # layers x attention heads x head_dim

    def forward(self, seq_lengths: list[int], response_tokens: int) -> float:
        """Useful FLOPs of one forward pass over sequences of `seq_lengths` real tokens."""
        tokens = sum(seq_lengths)
        pairs = sum(n * (n + 1) for n in seq_lengths)
        return 2.0 * self.body * tokens + 2.0 * self.head * response_tokens + 2.0 * self.attn * pairs

    def prompt_copies(self, lengths: list[int]) -> float:
        """FLOPs of prompts of these lengths that a shared-prompt pass does not recompute (rlvr.actors.shared_prompt):
        to subtract from `forward` of the full sequences."""
        return 2.0 * self.body * sum(lengths) + 2.0 * self.attn * sum(n * (n + 1) for n in lengths)


def flop_model(module: torch.nn.Module) -> FlopModel:
    """The FlopModel of a Hugging Face causal LM or of the critic (rlvr.actors.learner.load_value_model)."""
    head_module = module.get_output_embeddings() if hasattr(module, "get_output_embeddings") else None
    head = _numel(head_module.weight) if head_module is not None else 0
    linear = sum(_numel(m.weight) for m in module.modules() if isinstance(m, torch.nn.Linear))
    cfg = module.config
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    return FlopModel(body=linear - head, head=head, attn=cfg.num_hidden_layers * cfg.num_attention_heads * head_dim)


def _numel(weight: torch.Tensor) -> int:
    return getattr(weight, "ds_numel", None) or weight.numel()  # ZeRO-3 partitions: the full size is ds_numel


def peak_rss_gib() -> float:
    """Peak resident set size of this process so far, GiB (ru_maxrss: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2**30 if sys.platform == "darwin" else 2**20)
