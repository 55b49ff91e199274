"""Shared set-up for the RLVR core tests: a small prompt file and tiny-model configs."""

from __future__ import annotations

import json
from pathlib import Path

from core.config import load_config
from rlvr.config import RLVRConfig

REPO = Path(__file__).resolve().parents[2]
VERIFIER = "rlvr_core_verifier:has_digit"


def write_prompts(path: Path, n: int = 16) -> Path:
    rows = [{"id": f"p{i}", "messages": [{"role": "user", "content": f"Give me a number near {i}."}],
             "ground_truth": str(i), "dataset": VERIFIER} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def tiny_config(name: str, model_dir: Path, prompts: Path, out: Path, *overrides: str) -> RLVRConfig:
    base = [f"model={model_dir}", f"output_dir={out}", f"data.train=[{prompts}]", "data.eval=[]",
            "train.progress=false", "logging.tensorboard=false"]
    return load_config(RLVRConfig, REPO / "configs" / "rlvr" / name, [*base, *overrides])
