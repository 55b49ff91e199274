"""curves.png and the held-out interval: the pieces every run's end-of-run report is built from."""

from __future__ import annotations

import json

import pytest

from core.metrics import mean_ci95
from core.plots import plot_curves


def test_wilson_interval_for_proportions_and_normal_interval_otherwise():
    mean, low, high = mean_ci95([1.0] * 8 + [0.0] * 56)
    assert mean == 0.125 and low == pytest.approx(0.0648, abs=2e-4) and high == pytest.approx(0.2277, abs=2e-4)
    assert mean_ci95([0.0] * 10)[1:] == (0.0, pytest.approx(0.2775, abs=2e-4))  # never a zero-width interval
    mean, low, high = mean_ci95([0.5, 0.25, 0.75, 0.5])
    assert mean == 0.5 and low == pytest.approx(0.5 - 1.96 * (1 / 24) ** 0.5 / 2, abs=1e-9)


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_curves_drawn_for_rlvr_and_stage_runs_and_skipped_without_metrics(tmp_path):
    rl = tmp_path / "rl"
    rl.mkdir()
    _write(rl / "metrics.jsonl", [
        {"step": 0, "eval/reward/mean": 0.1, "eval/reward/mean_ci95_low": 0.05, "eval/reward/mean_ci95_high": 0.2},
        *[{"step": s, "reward/mean": s / 10, "kl/sequence_mean": s, "response/length_mean": 10,
           "response/finished_fraction": 1.0} for s in range(1, 6)],
        {"step": 5, "eval/reward/mean": 0.4, "eval/reward/mean_ci95_low": 0.3, "eval/reward/mean_ci95_high": 0.5}])
    assert plot_curves(rl) == rl / "curves.png" and (rl / "curves.png").stat().st_size > 5_000
    sft = tmp_path / "sft"
    sft.mkdir()
    _write(sft / "metrics.jsonl", [{"step": s, "loss": 1 / s, "grad_norm": 2.0} for s in range(1, 4)])
    assert plot_curves(sft) == sft / "curves.png"
    assert plot_curves(tmp_path / "nothing") is None
