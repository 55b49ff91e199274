"""`rlvr pipeline`: SFT -> DPO (-> reward model) -> RLVR from one config, each stage starting from the previous
stage's output, resumable per stage.

One run folder holds everything:
    <output_dir>/pipeline.yaml          the resolved pipeline config
    <output_dir>/<stage>/               that stage's run folder (config.yaml, metrics.jsonl, checkpoints/, final/)
    <output_dir>/<stage>/STAGE_DONE.json  written last when the stage finished: a re-run skips the stage
    <output_dir>/summary.json           the table printed at the end

Model chaining: a stage's `model` is the `model_dir` of the stage named by `model_from` (default: the previous
`sft`/`dpo`/`rlvr` stage; the first stage starts from the pipeline's `model`). An `rlvr` stage with
`value_model_from: <rm stage>` initialises its critic from that reward model, as Tulu 3 did.
An unfinished stage resumes from its own latest checkpoint, since each trainer resumes from its output_dir; a
stage that returns without a final model (e.g. `stop_after_steps`) gets no marker, is listed as "stopped", and the
pipeline stops there. A marker is trusted as is: after changing an earlier stage, delete the later stages' folders
(or their STAGE_DONE.json) to retrain them.
"""

from __future__ import annotations

import argparse
import importlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from core.config import FrozenConfig, load_config, save_config
from core.logging import get_logger
from core.metrics import read_metrics
from core.run import FINAL_MARKER, TrainResult

log = get_logger(__name__)

StageKind = Literal["sft", "dpo", "rm", "rlvr"]
DONE = "STAGE_DONE.json"


@dataclass(frozen=True)
class StageRunner:
    config_class: str  # "module:Class"
    train_fn: str  # "module:function"


RUNNERS: dict[str, StageRunner] = {
    "sft": StageRunner("sft_dpo.sft:SFTConfig", "sft_dpo.sft:train_sft"),
    "dpo": StageRunner("sft_dpo.dpo:DPOConfig", "sft_dpo.dpo:train_dpo"),
    "rm": StageRunner("sft_dpo.reward_model:RMConfig", "sft_dpo.reward_model:train_reward_model"),
    "rlvr": StageRunner("rlvr.config:RLVRConfig", "rlvr.driver:train"),
}
# Stages whose output is a policy that the next policy stage continues from (a reward model is not).
POLICY_STAGES = ("sft", "dpo", "rlvr")


class PipelineStage(FrozenConfig):
    name: str = Field(description="folder name of the stage inside the run folder; unique")
    kind: StageKind = Field(description="sft, dpo, rm or rlvr")
    config: str = Field(description="the stage's own YAML config file (relative to the working directory)")
    overrides: list[str] = Field(default_factory=list, description="a.b.c=value overrides for the stage config")
    model_from: str | None = Field(None, description="stage whose final model this stage starts from")
    value_model_from: str | None = Field(None, description="rlvr only: the rm stage that initialises the critic")


class PipelineConfig(FrozenConfig):
    model: str = Field(description="starting model: bundled name, hub name or local folder")
    output_dir: str = Field(description="the run folder for every stage")
    seed: int | None = Field(None, description="when set, passed to every stage as seed=...")
    stages: list[PipelineStage] = Field(min_length=1)

    @model_validator(mode="after")
    def _check_references(self) -> PipelineConfig:
        seen: dict[str, str] = {}
        for stage in self.stages:
            if stage.name in seen:
                raise ValueError(f"stage name {stage.name!r} is used twice")
            for ref, field in ((stage.model_from, "model_from"), (stage.value_model_from, "value_model_from")):
                if ref is not None and ref not in seen:
                    raise ValueError(f"stage {stage.name!r}: {field}={ref!r} names no earlier stage "
                                     f"(earlier: {', '.join(seen) or 'none'})")
            if stage.value_model_from is not None:
                if stage.kind != "rlvr":
                    raise ValueError(f"stage {stage.name!r}: value_model_from only applies to rlvr stages")
                if seen[stage.value_model_from] != "rm":
                    raise ValueError(f"stage {stage.name!r}: value_model_from must name an rm stage")
            seen[stage.name] = stage.kind
        return self


def _import(spec: str) -> Any:
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr)


def stage_overrides(cfg: PipelineConfig, stage: PipelineStage, done: dict[str, dict[str, Any]]) -> list[str]:
    """The overrides that chain `stage` to the earlier stages (start model, value model, output folder, seed)."""
    if stage.model_from is not None:
        start = done[stage.model_from]["model_dir"]
    else:
        earlier = [s for s in cfg.stages[: cfg.stages.index(stage)] if s.kind in POLICY_STAGES]
        start = done[earlier[-1].name]["model_dir"] if earlier else cfg.model
        if stage.kind == "rm":  # Tulu 3 initialises the reward model from the SFT policy
            sft = [s for s in earlier if s.kind == "sft"]
            start = done[sft[-1].name]["model_dir"] if sft else start
    extra = [f"model={start}", f"output_dir={Path(cfg.output_dir) / stage.name}"]
    if stage.value_model_from is not None:
        extra.append(f"value_model={done[stage.value_model_from]['model_dir']}")
    if cfg.seed is not None:
        extra.append(f"seed={cfg.seed}")
    return [*stage.overrides, *extra]


def run_pipeline(cfg: PipelineConfig) -> list[dict[str, Any]]:
    """Run every unfinished stage in order; returns the summary rows (also written to summary.json)."""
    root = Path(cfg.output_dir)
    root.mkdir(parents=True, exist_ok=True)
    save_config(cfg, root / "pipeline.yaml")
    done: dict[str, dict[str, Any]] = {}
    rows = []
    for i, stage in enumerate(cfg.stages, 1):
        marker = root / stage.name / DONE
        if marker.is_file():
            done[stage.name] = json.loads(marker.read_text())
            log.info("[%d/%d] %s (%s): finished earlier, skipped", i, len(cfg.stages), stage.name, stage.kind)
            retrained = [r["stage"] for r in rows if r["status"] == "ran"]
            if retrained:
                log.warning("%s was trained before %s re-ran in this invocation, so it did not start from the new "
                            "model(s); delete %s to retrain it", stage.name, ", ".join(retrained),
                            root / stage.name)
            rows.append({**done[stage.name], "status": "skipped"})
            continue
        runner = RUNNERS[stage.kind]
        overrides = stage_overrides(cfg, stage, done)
        stage_cfg = load_config(_import(runner.config_class), stage.config, overrides)
        log.info("[%d/%d] %s (%s): starting from %s", i, len(cfg.stages), stage.name, stage.kind, stage_cfg.model)
        t0 = time.time()
        result: TrainResult = _import(runner.train_fn)(stage_cfg)
        if not stage_finished(stage.kind, result):
            # e.g. stop_after_steps (a time-boxed job): no final model yet, so no marker; a re-run resumes it.
            log.warning("[%d/%d] %s stopped after step %d without a final model; later stages not run. Re-run the "
                        "pipeline to resume it", i, len(cfg.stages), stage.name, result.steps)
            rows.append({"stage": stage.name, "kind": stage.kind, "status": "stopped", "steps": result.steps,
                         "seconds": round(time.time() - t0, 1), "output_dir": str(result.output_dir)})
            break
        record = {
            "stage": stage.name, "kind": stage.kind, "model_dir": str(result.model_dir),
            "output_dir": str(result.output_dir), "steps": result.steps, "seconds": round(time.time() - t0, 1),
            "start_model": str(stage_cfg.model), "metrics": _stage_metrics(result),
        }
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps(record, indent=1))  # written last: the stage counts as done only now
        done[stage.name] = record
        rows.append({**record, "status": "ran"})
    (root / "summary.json").write_text(json.dumps(rows, indent=1))
    print(format_summary(rows))
    return rows


def stage_finished(kind: str, result: TrainResult) -> bool:
    """True when the stage wrote its final model (the prelude trainers also mark it complete, written last)."""
    final = Path(result.model_dir)
    if not (final / "config.json").is_file():
        return False
    if kind in ("sft", "dpo", "rm"):
        return (final / FINAL_MARKER).is_file()
    return True


# The metrics the summary table shows per stage kind (when the stage reported them), most telling first.
KEY_METRICS: dict[str, tuple[str, ...]] = {
    "sft": ("loss", "grad_norm"),
    "dpo": ("loss", "rewards/accuracies", "rewards/margins"),
    "rm": ("loss", "accuracy", "eval/accuracy"),
    "rlvr": ("eval/reward/mean@start", "eval/reward/mean", "reward/mean", "response/length_mean"),
}


def _stage_metrics(result: TrainResult) -> dict[str, float]:
    """The stage's final numeric metrics, plus the last value of every metric in its metrics.jsonl (so eval lines
    logged after the last train step count) and, for RLVR, the evaluation of the starting policy (step 0) as
    `eval/reward/mean@start`."""
    metrics: dict[str, float] = {}
    path = Path(result.output_dir) / "metrics.jsonl"
    history = read_metrics(path) if path.is_file() else []
    for line in history:
        metrics.update({k: v for k, v in line.items() if isinstance(v, (int, float)) and k not in ("step", "time")})
    metrics.update({k: v for k, v in result.metrics.items() if isinstance(v, (int, float))})
    start = next((h for h in history if h.get("step") == 0 and "eval/reward/mean" in h), None)
    if start is not None:
        for key in ("eval/reward/mean", "eval/reward/mean_ci95_low", "eval/reward/mean_ci95_high"):
            if key in start:
                metrics[f"{key}@start"] = start[key]
    return metrics


def held_out_line(metrics: dict[str, float]) -> str | None:
    """'held-out 0.125 [0.08, 0.19] -> 0.406 [0.33, 0.49] (128 prompts; intervals do not overlap)' for an RLVR
    stage that evaluated at its start and end with intervals (None otherwise)."""
    keys = ("eval/reward/mean", "eval/reward/mean_ci95_low", "eval/reward/mean_ci95_high")
    if not all(k in metrics and f"{k}@start" in metrics for k in keys):
        return None
    m0, lo0, hi0 = (metrics[f"{k}@start"] for k in keys)
    m1, lo1, hi1 = (metrics[k] for k in keys)
    overlap = "overlap" if lo1 <= hi0 and lo0 <= hi1 else "do not overlap"
    n = metrics.get("eval/prompts")
    prompts = f"{n:g} prompts; " if n else ""
    return f"held-out {m0:.3f} [{lo0:.2f}, {hi0:.2f}] -> {m1:.3f} [{lo1:.2f}, {hi1:.2f}] ({prompts}95% intervals {overlap})"


def format_summary(rows: list[dict[str, Any]], max_metrics: int = 4) -> str:
    lines = [f"{'stage':12s} {'kind':5s} {'status':8s} {'steps':>6s} {'seconds':>8s}  metrics"]
    for r in rows:
        metrics = r.get("metrics", {})
        shown = [(k, metrics[k]) for k in KEY_METRICS.get(r["kind"], ()) if k in metrics]
        shown = shown or list(metrics.items())[:max_metrics]
        metrics = ", ".join(f"{k}={v:.4g}" for k, v in shown)
        lines.append(f"{r['stage']:12s} {r['kind']:5s} {r['status']:8s} {r.get('steps', 0):6d} "
                     f"{r.get('seconds', 0):8.1f}  {metrics}")
        held_out = held_out_line(r.get("metrics", {})) if r["kind"] == "rlvr" else None
        if held_out:
            lines.append(f"{'':12s} {'':5s} {'':8s} {'':6s} {'':8s}  {held_out}")
    return "\n".join(lines)


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="pipeline YAML (see configs/pipeline/)")
    parser.add_argument("overrides", nargs="*", help="a.b.c=value overrides of the pipeline config")


def cli_main(args: argparse.Namespace) -> int:
    cfg = load_config(PipelineConfig, args.config, args.overrides)
    run_pipeline(cfg)
    return 0
