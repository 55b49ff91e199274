"""Checkpoints that are never loaded half-written.

Layout under a run's `checkpoints/` folder:
    step_00000010/         one complete checkpoint: whatever the trainer wrote (an `hf/` model folder, DeepSpeed
                           state, `trainer_state.pt`) plus MANIFEST.json (every file's size), written last
    latest                 text file naming the newest complete checkpoint, replaced atomically after it

A checkpoint is written into `.tmp-step_N/`, its manifest added, then renamed; only then is `latest` updated.
Loading checks `latest`; if it names a missing or incomplete folder (a truncated file, no manifest), the newest
complete checkpoint is used instead and a warning says why. Multi-rank trainers: every rank writes into
`begin(step)`'s folder, then rank 0 alone calls `commit(step)` after a barrier.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

from rlvr.utils.logging import get_logger

log = get_logger(__name__)

MANIFEST = "MANIFEST.json"
LATEST = "latest"
_STEP_DIR = re.compile(r"^step_(\d{8})$")


class CheckpointError(RuntimeError):
    pass


class CheckpointManager:
    def __init__(self, root: str | Path, keep_last: int = 2):
        self.root = Path(root)
        self.keep_last = keep_last

    @staticmethod
    def step_name(step: int) -> str:
        return f"step_{step:08d}"

    def begin(self, step: int) -> Path:
        """The temporary folder to write checkpoint `step` into (created empty)."""
        tmp = self.root / f".tmp-{self.step_name(step)}"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        return tmp

    def commit(self, step: int, extra: dict[str, Any] | None = None) -> Path:
        """Seal checkpoint `step`: manifest, rename into place, then point `latest` at it; prune old ones."""
        tmp = self.root / f".tmp-{self.step_name(step)}"
        if not tmp.is_dir():
            raise CheckpointError(f"commit({step}) without begin({step}): {tmp} does not exist")
        files = {str(p.relative_to(tmp)): p.stat().st_size for p in sorted(tmp.rglob("*")) if p.is_file()}
        (tmp / MANIFEST).write_text(json.dumps({"step": step, "files": files, **(extra or {})}, indent=1))
        final = self.root / self.step_name(step)
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        _atomic_write(self.root / LATEST, final.name)
        self._prune()
        log.info("checkpoint %s written", final)
        return final

    def _prune(self) -> None:
        complete = self.complete_checkpoints()
        for path in complete[: max(0, len(complete) - self.keep_last)]:
            shutil.rmtree(path, ignore_errors=True)

    def complete_checkpoints(self) -> list[Path]:
        """Complete checkpoints, oldest first."""
        if not self.root.is_dir():
            return []
        found = [p for p in self.root.iterdir() if _STEP_DIR.match(p.name) and is_complete(p)]
        return sorted(found, key=lambda p: p.name)

    def latest(self) -> Path | None:
        """The checkpoint to resume from, or None when there is none. Never returns an incomplete one."""
        marker = self.root / LATEST
        if marker.is_file():
            named = self.root / marker.read_text().strip()
            if is_complete(named):
                return named
            log.warning("checkpoint marker %s names %s, which is missing or incomplete; "
                        "falling back to the newest complete checkpoint", marker, named)
        complete = self.complete_checkpoints()
        return complete[-1] if complete else None

    @staticmethod
    def step_of(path: Path) -> int:
        m = _STEP_DIR.match(path.name)
        if not m:
            raise CheckpointError(f"{path} is not a step_NNNNNNNN checkpoint folder")
        return int(m.group(1))


def is_complete(path: Path) -> bool:
    """A folder is complete when its manifest exists and every listed file is there at its recorded size."""
    manifest = path / MANIFEST
    if not manifest.is_file():
        return False
    try:
        files = json.loads(manifest.read_text())["files"]
    except (json.JSONDecodeError, KeyError):
        return False
    return all((path / rel).is_file() and (path / rel).stat().st_size == size for rel, size in files.items())


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def capture_rng_state() -> dict[str, Any]:
    """Python, NumPy and torch (CPU and CUDA) generator states, for exact resume."""
    import numpy as np
    import torch

    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    import numpy as np
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
