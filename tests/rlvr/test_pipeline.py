"""`rlvr pipeline` end to end on the tiny model (configs/pipeline/tiny.yaml): SFT -> DPO -> RM -> RLVR chained
through each stage's final model, finished stages skipped on re-run, an unfinished stage resumed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from core.config import load_config
from rlvr.pipeline import DONE, PipelineConfig, format_summary, run_pipeline

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "configs" / "pipeline" / "tiny.yaml"


def _config(out: Path, model: Path, *overrides: str) -> PipelineConfig:
    return load_config(PipelineConfig, TINY, [f"output_dir={out}", f"model={model}", *overrides])


def _stage_cfg(out: Path, stage: str) -> dict:
    return yaml.safe_load((out / stage / "config.yaml").read_text())


def _final_mtimes(out: Path, stages) -> dict[str, float]:
    return {f"{s}/{f.name}": f.stat().st_mtime_ns for s in stages for f in (out / s / "final").iterdir()}


@pytest.mark.ray  # its rlvr stage starts a local Ray
def test_tiny_pipeline_chains_stages_and_skips_finished_ones(tmp_path, tiny_model_dir, monkeypatch, capsys):
    monkeypatch.chdir(REPO)  # stage configs are named relative to the project root
    out = tmp_path / "run"
    cfg = _config(out, tiny_model_dir)
    rows = run_pipeline(cfg)
    stages = ["sft", "dpo", "rm", "rlvr"]
    assert [r["stage"] for r in rows] == stages and {r["status"] for r in rows} == {"ran"}

    for stage in stages:
        final = out / stage / "final"
        assert (final / "config.json").is_file() and any(final.glob("*.safetensors")), stage
        assert (out / stage / "metrics.jsonl").is_file() and (out / stage / DONE).is_file()
    # each stage started from the right earlier stage's final model (read back from the stage's saved config)
    assert Path(_stage_cfg(out, "sft")["model"]) == tiny_model_dir
    assert _stage_cfg(out, "dpo")["model"] == str(out / "sft" / "final")
    assert _stage_cfg(out, "rm")["model"] == str(out / "sft" / "final")  # Tulu 3: RM from the SFT model
    rlvr_cfg = _stage_cfg(out, "rlvr")
    assert rlvr_cfg["model"] == str(out / "dpo" / "final")
    assert rlvr_cfg["value_model"] == str(out / "rm" / "final")  # critic initialised from the reward model
    assert rlvr_cfg["algorithm"] == "ppo"
    assert all(_stage_cfg(out, s)["seed"] == 0 for s in stages)
    # procedural data, not files
    assert _stage_cfg(out, "sft")["data"]["path"].startswith("procedural:gsm8k_sft")
    assert _stage_cfg(out, "dpo")["data"]["path"].startswith("procedural:gsm8k_pref")

    by_stage = {r["stage"]: r for r in rows}
    assert by_stage["sft"]["steps"] == 3 and by_stage["dpo"]["steps"] == 2 and by_stage["rlvr"]["steps"] == 2
    assert "loss" in by_stage["sft"]["metrics"] and "accuracy" in by_stage["rm"]["metrics"]
    assert "reward/mean" in by_stage["rlvr"]["metrics"] and "eval/reward/mean" in by_stage["rlvr"]["metrics"]
    summary = json.loads((out / "summary.json").read_text())
    assert [r["status"] for r in summary] == ["ran"] * 4
    printed = capsys.readouterr().out
    assert format_summary(rows) in printed

    # Re-run: nothing retrains, the final models are untouched, the chaining is reported from the markers.
    before = _final_mtimes(out, stages)
    rows2 = run_pipeline(cfg)
    assert [r["status"] for r in rows2] == ["skipped"] * 4
    assert _final_mtimes(out, stages) == before
    assert [r["model_dir"] for r in rows2] == [r["model_dir"] for r in rows]
    assert [r["status"] for r in json.loads((out / "summary.json").read_text())] == ["skipped"] * 4


def test_unfinished_stage_resumes_while_finished_ones_are_skipped(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.chdir(REPO)
    out = tmp_path / "run"
    # SFT -> DPO only; DPO stops after its first step (a time-boxed job): no final model, no marker
    two = [
        "stages=[{name: sft, kind: sft, config: configs/sft/tiny_cpu.yaml, overrides: "
        "['data.path=procedural:gsm8k_sft?n=16&seed=0', data.max_length=384, data.max_samples=null, max_steps=2]}, "
        "{name: dpo, kind: dpo, config: configs/dpo/tiny_cpu.yaml, overrides: "
        "['data.path=procedural:gsm8k_pref?n=16&seed=0', data.max_length=384, data.max_samples=null, max_steps=3, "
        "checkpoints.save_every=1%s]}]",
    ]
    first = run_pipeline(_config(out, tiny_model_dir, two[0] % ", stop_after_steps=1"))
    assert [(r["stage"], r["status"]) for r in first] == [("sft", "ran"), ("dpo", "stopped")]
    assert not (out / "dpo" / DONE).exists() and not (out / "dpo" / "final").exists()
    assert (out / "dpo" / "checkpoints").is_dir()
    sft_before = _final_mtimes(out, ["sft"])

    second = run_pipeline(_config(out, tiny_model_dir, two[0] % ""))
    assert [(r["stage"], r["status"]) for r in second] == [("sft", "skipped"), ("dpo", "ran")]
    assert _final_mtimes(out, ["sft"]) == sft_before
    assert (out / "dpo" / DONE).is_file() and second[1]["steps"] == 3
    starts = [json.loads(line) for line in (out / "dpo" / "metrics.jsonl").read_text().splitlines()
              if '"resumed_from_step"' in line]
    assert [s["resumed_from_step"] for s in starts] == [0, 1]  # the second run continued from the step-1 checkpoint
    assert _stage_cfg(out, "dpo")["model"] == str(out / "sft" / "final")


def test_config_rejects_bad_references(tmp_path):
    base = {"model": "tiny-random", "output_dir": str(tmp_path)}
    with pytest.raises(ValueError, match="names no earlier stage"):
        PipelineConfig.model_validate({**base, "stages": [
            {"name": "rl", "kind": "rlvr", "config": "x.yaml", "value_model_from": "rm"}]})
    with pytest.raises(ValueError, match="must name an rm stage"):
        PipelineConfig.model_validate({**base, "stages": [
            {"name": "sft", "kind": "sft", "config": "x.yaml"},
            {"name": "rl", "kind": "rlvr", "config": "x.yaml", "value_model_from": "sft"}]})
    with pytest.raises(ValueError, match="used twice"):
        PipelineConfig.model_validate({**base, "stages": [
            {"name": "a", "kind": "sft", "config": "x.yaml"}, {"name": "a", "kind": "dpo", "config": "x.yaml"}]})


@pytest.mark.parametrize("path", sorted((REPO / "configs" / "pipeline").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_pipeline_configs_resolve_every_stage(path, monkeypatch):
    from rlvr.pipeline import RUNNERS, _import, stage_overrides

    monkeypatch.chdir(REPO)
    cfg = load_config(PipelineConfig, path)
    done: dict[str, dict] = {}
    for stage in cfg.stages:
        stage_cfg = load_config(_import(RUNNERS[stage.kind].config_class), stage.config,
                                stage_overrides(cfg, stage, done))
        assert stage_cfg.output_dir == str(Path(cfg.output_dir) / stage.name)
        done[stage.name] = {"model_dir": f"{cfg.output_dir}/{stage.name}/final"}


def test_summary_prints_the_rlvr_held_out_rise_with_intervals():
    metrics = {"eval/reward/mean@start": 0.125, "eval/reward/mean_ci95_low@start": 0.08,
               "eval/reward/mean_ci95_high@start": 0.19, "eval/reward/mean": 0.406,
               "eval/reward/mean_ci95_low": 0.33, "eval/reward/mean_ci95_high": 0.49, "eval/prompts": 128}
    rows = [{"stage": "rlvr", "kind": "rlvr", "status": "ran", "steps": 20, "seconds": 1.0, "metrics": metrics}]
    assert ("held-out 0.125 [0.08, 0.19] -> 0.406 [0.33, 0.49] (128 prompts; 95% intervals do not overlap)"
            in format_summary(rows))
    metrics["eval/reward/mean_ci95_low"] = 0.15
    assert "95% intervals overlap" in format_summary(rows)
    del metrics["eval/reward/mean_ci95_low@start"]  # no interval at the start: no line
    assert "held-out" not in format_summary(rows)
