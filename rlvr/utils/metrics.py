"""Metrics sink shared by every trainer: one JSONL line per step (the source of truth, easy to diff and plot),
TensorBoard scalars, and Weights & Biases when configured (`wandb_project` set and `wandb` installed)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from rlvr.utils.logging import get_logger

log = get_logger(__name__)


class MetricsLogger:
    def __init__(self, out_dir: str | Path, *, tensorboard: bool = True, wandb_project: str | None = None,
                 run_name: str | None = None, config: dict[str, Any] | None = None, append: bool = False):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.out_dir / "metrics.jsonl"
        self._file = self.path.open("a" if append else "w")
        self._tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.out_dir / "tensorboard"))
        self._wandb = None
        if wandb_project:
            try:
                import wandb
            except ImportError as err:
                raise RuntimeError("wandb_project is set but the wandb package is not installed: pip install wandb") from err
            self._wandb = wandb.init(project=wandb_project, name=run_name, config=config, resume="allow")

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        clean = {k: _plain(v) for k, v in metrics.items()}
        self._file.write(json.dumps({"step": step, "time": time.time(), **clean}) + "\n")
        self._file.flush()
        for k, v in clean.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                if self._tb is not None:
                    self._tb.add_scalar(k, v, step)
        if self._tb is not None:
            self._tb.flush()
        if self._wandb is not None:
            self._wandb.log(clean, step=step)

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _plain(v: Any) -> Any:
    if hasattr(v, "item") and getattr(v, "numel", lambda: 1)() == 1:
        return v.item()
    return v


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Read a metrics.jsonl back (tests, plots, the pipeline summary)."""
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def mean_ci95(values: list[float]) -> tuple[float, float, float]:
    """Mean of per-prompt scores and a 95% interval: Wilson's score interval when every value is 0 or 1 (a
    proportion; sound at small n and near 0/1), else mean +- 1.96 standard errors."""
    n = len(values)
    if n == 0:
        return 0.0, 0.0, 0.0
    mean = sum(values) / n
    z = 1.96
    if all(v in (0, 1) for v in values):
        centre = (mean + z * z / (2 * n)) / (1 + z * z / n)
        half = z * math.sqrt(mean * (1 - mean) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        return mean, max(0.0, centre - half), min(1.0, centre + half)
    var = sum((v - mean) ** 2 for v in values) / max(n - 1, 1)
    half = z * math.sqrt(var / n)
    return mean, mean - half, mean + half
