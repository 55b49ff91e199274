"""Sweep planning and plotting, without training (the 2x2 micro-sweep on the tiny model is in
tests/rlvr/test_sweep_micro.py)."""

from __future__ import annotations

import pandas as pd
import pytest

from core.config import ConfigError
from rlvr.sweep import SweepConfig, plot_results, primary_metric, trial_overrides, trial_points


def cfg(**kw):
    base = dict(stage="sft", config="x.yaml", output_dir="out", learning_rates=[1e-5, 1e-4],
                effective_batch_sizes=[4, 8])
    return SweepConfig.model_validate({**base, **kw})


def test_grid_and_random_points():
    assert trial_points(cfg()) == [(1e-5, 4), (1e-5, 8), (1e-4, 4), (1e-4, 8)]
    pts = trial_points(cfg(search="random", num_samples=5, seed=3))
    assert len(pts) == 5 and all(1e-5 <= lr <= 1e-4 and b in (4, 8) for lr, b in pts)
    assert pts == trial_points(cfg(search="random", num_samples=5, seed=3))  # seeded


def test_batch_realised_by_accumulation(tmp_path):
    class Optim:
        per_device_batch_size = 2

    class Dist:
        world_size = 2

    class Stage:
        optim, dist = Optim, Dist

    ov = trial_overrides(cfg(), Stage, 3e-5, 8, tmp_path)
    assert "optim.gradient_accumulation_steps=2" in ov and "optim.lr=3e-05" in ov
    with pytest.raises(ConfigError, match="not a multiple"):
        trial_overrides(cfg(), Stage, 3e-5, 6, tmp_path)


def test_plots_written(tmp_path):
    rows = []
    for lr in (1e-5, 1e-4):
        for bs in (4, 8):
            rows.append({"lr": lr, "effective_batch_size": bs, "lr_bs_ratio": lr / bs,
                         "gsm8k/accuracy": lr * 1e4 / bs, "hellaswag/acc_norm": bs / 10, "hellaswag/acc": 0.1})
    frame = pd.DataFrame(rows)
    assert primary_metric(frame, "hellaswag") == "hellaswag/acc_norm"
    paths = plot_results(frame, tmp_path, ["gsm8k", "hellaswag", "ifeval"])
    names = sorted(p.name for p in paths)
    assert names == ["contour_gsm8k.png", "contour_hellaswag.png", "ratio.png"]
    assert all(p.stat().st_size > 1000 for p in paths)
