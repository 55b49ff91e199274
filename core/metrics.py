"""Metrics sink shared by every trainer: one JSONL line per step (the source of truth, easy to diff and plot),
TensorBoard scalars, and Weights & Biases when configured (`wandb_project` set and `wandb` installed).

metrics.jsonl is append-only: each line goes out in one `write` on an O_APPEND descriptor, so a line is whole or
(after a crash mid-write) a torn last line that `prepare_metrics_file` drops on resume with a warning. A new run
never overwrites an earlier run's file: it is renamed aside (`metrics.replaced-<time>.jsonl`) first.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

from core.logging import get_logger

log = get_logger(__name__)

METRICS_FILE = "metrics.jsonl"


class MetricsLogger:
    def __init__(self, out_dir: str | Path, *, tensorboard: bool = True, wandb_project: str | None = None,
                 run_name: str | None = None, config: dict[str, Any] | None = None, append: bool = False):
        """`append=False` starts a new file (an existing one is moved aside, never overwritten); `append=True`
        continues the file as `prepare_metrics_file` left it."""
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.out_dir / METRICS_FILE
        if not append:
            move_aside(self.path)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # lazy: optional (logging.tensorboard), seconds

            self._tb = SummaryWriter(str(self.out_dir / "tensorboard"))
        self._wandb = None
        if wandb_project:
            try:
                import wandb  # lazy: an optional dependency
            except ImportError as err:
                raise RuntimeError("wandb_project is set but the wandb package is not installed: pip install wandb") from err
            self._wandb = wandb.init(project=wandb_project, name=run_name, config=config, resume="allow")

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        clean = {k: _plain(v) for k, v in metrics.items()}
        data = (json.dumps({"step": step, "time": time.time(), **clean}) + "\n").encode()
        while data:  # one write for a regular file; the loop only guards against a short write
            data = data[os.write(self._fd, data):]
        for k, v in clean.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                if self._tb is not None:
                    self._tb.add_scalar(k, v, step)
        if self._tb is not None:
            self._tb.flush()
        if self._wandb is not None:
            self._wandb.log(clean, step=step)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
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


def move_aside(path: Path) -> Path | None:
    """Rename an existing non-empty file to `<stem>.replaced-<UTC time><suffix>` (logged); returns the new path."""
    if not path.is_file() or path.stat().st_size == 0:
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    target = path.with_name(f"{path.stem}.replaced-{stamp}{path.suffix}")
    n = 1
    while target.exists():
        target = path.with_name(f"{path.stem}.replaced-{stamp}-{n}{path.suffix}")
        n += 1
    path.rename(target)
    log.warning("%s from an earlier run was moved to %s (a new run never overwrites it)", path, target.name)
    return target


def _parse_lines(path: Path) -> tuple[list[tuple[str, dict[str, Any]]], list[str]]:
    """(whole lines with their rows, problems). A last line without its newline that does not parse is torn."""
    text = path.read_bytes().decode("utf-8", errors="replace")
    lines = text.split("\n")
    torn_tail = lines.pop() if lines else ""  # text after the last newline ("" when the file ends with one)
    rows, problems = [], []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict) or not isinstance(row.get("step"), int):
                raise ValueError("no integer 'step'")
        except ValueError as err:
            problems.append(f"line {i} is not a metrics row ({str(err)[:80]})")
            continue
        rows.append((line, row))
    if torn_tail.strip():
        try:
            row = json.loads(torn_tail)
            rows.append((torn_tail, row))  # complete, only its newline is missing
        except ValueError:
            problems.append(f"the last line ({len(torn_tail)} characters, no newline) is torn")
    return rows, problems


def prepare_metrics_file(out_dir: str | Path, resume_step: int | None) -> None:
    """Get metrics.jsonl ready before a run writes to it. Resuming from `resume_step`: keep lines of steps up to it
    (the later ones will be logged again, so no step repeats), drop unreadable or torn lines with a warning.
    A fresh run (`None`): an existing file is moved aside."""
    path = Path(out_dir) / METRICS_FILE
    if resume_step is None:
        move_aside(path)
        return
    if not path.is_file():
        return
    rows, problems = _parse_lines(path)
    for problem in problems:
        log.warning("%s: %s; dropped", path, problem)
    keep = "".join(line + "\n" for line, row in rows if row["step"] <= resume_step)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(keep)
    os.replace(tmp, path)


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Read a metrics.jsonl back (tests, plots, the pipeline summary). A torn last line (a run killed while
    writing it) is left out; any other bad line raises ValueError naming it."""
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_FILE
    rows, problems = _parse_lines(path)
    bad = [p for p in problems if "torn" not in p]
    if bad:
        raise ValueError(f"{path}: {bad[0]}")
    return [row for _, row in rows]


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
