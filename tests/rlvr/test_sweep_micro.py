"""`rlvr sweep` end to end: a 2x2 LR x batch-size micro-sweep of the tiny model's SFT stage on a local Ray Tune,
each trial trained on procedural data and evaluated (ARC-Easy by log-likelihood, GSM8K by generation)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from rlvr.cli import main

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.ray  # Ray Tune
def test_micro_sweep_writes_csv_and_plots(tmp_path, tiny_model_dir, shared_data, monkeypatch):
    monkeypatch.chdir(REPO)  # the stage config is named relative to the project root
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    out = tmp_path / "sweep"
    cfg = {
        "stage": "sft",
        "config": "configs/sft/tiny_cpu.yaml",
        "overrides": [f"model={tiny_model_dir}", "data.path=procedural:gsm8k_sft?n=16&seed=0",
                      "data.max_length=384", "data.max_samples=null", "max_steps=2", "optim.per_device_batch_size=2",
                      "logging.tensorboard=false"],
        "output_dir": str(out),
        "learning_rates": [1.0e-4, 1.0e-3],
        "effective_batch_sizes": [2, 4],
        "eval": {"tasks": ["arc_easy", "gsm8k"], "limit": 2, "data_dir": str(shared_data), "backend": "hf",
                 "max_new_tokens": 8},
        "cpus_per_trial": 1,
        "max_concurrent_trials": 1,
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["sweep", "--config", str(path)]) == 0

    frame = pd.read_csv(out / "results.csv")
    assert len(frame) == 4
    assert sorted(zip(frame["lr"], frame["effective_batch_size"])) == [(1e-4, 2), (1e-4, 4), (1e-3, 2), (1e-3, 4)]
    assert (frame["lr_bs_ratio"] - frame["lr"] / frame["effective_batch_size"]).abs().max() < 1e-15
    assert (frame["train_steps"] == 2).all()
    for col in ("arc_easy/acc_norm", "gsm8k/exact_match"):
        assert col in frame.columns and frame[col].between(0, 1).all(), list(frame.columns)
    # every trial trained its own model with its own batch (gradient accumulation 1 or 2 over micro-batches of 2)
    for _, row in frame.iterrows():
        trial_cfg = yaml.safe_load((Path(row["model_dir"]).parent / "config.yaml").read_text())
        assert trial_cfg["optim"]["lr"] == row["lr"]
        assert trial_cfg["optim"]["gradient_accumulation_steps"] * 2 == row["effective_batch_size"]
    for name in ("contour_arc_easy.png", "contour_gsm8k.png", "ratio.png"):
        assert (out / name).stat().st_size > 5000, name


@pytest.mark.parametrize("path", sorted((REPO / "configs" / "sweeps").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_sweep_configs_give_valid_trials(path, monkeypatch, tmp_path):
    from core.config import load_config
    from rlvr.pipeline import RUNNERS, _import
    from rlvr.sweep import SweepConfig, trial_overrides, trial_points

    monkeypatch.chdir(REPO)
    cfg = load_config(SweepConfig, path)
    cls = _import(RUNNERS[cfg.stage].config_class)
    base = load_config(cls, cfg.config, cfg.overrides)
    points = trial_points(cfg)
    assert len(points) >= 4
    for lr, batch in points:
        trial = load_config(cls, cfg.config, trial_overrides(cfg, base, lr, batch, tmp_path / "t"))
        assert trial.optim.lr == lr
        assert (trial.optim.per_device_batch_size * trial.optim.gradient_accumulation_steps
                * trial.dist.world_size) == batch
