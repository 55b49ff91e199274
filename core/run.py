"""What every trainer returns, so the pipeline and the sweep can chain and compare stages."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class TrainResult:
    output_dir: Path  # the run folder (config.yaml, metrics.jsonl, checkpoints/)
    model_dir: Path  # the final model in Hugging Face format: the next stage's `model`
    metrics: dict[str, float] = field(default_factory=dict)  # final/summary metrics
    steps: int = 0
