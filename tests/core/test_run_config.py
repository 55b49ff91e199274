"""One config base for every stage (core.run.RunConfig): SFT/DPO/RM and RLVR spell seed, output_dir, checkpoints,
logging and on_nonfinite the same way, and an earlier spelling is rejected with the key that replaced it."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.config import ConfigError, load_config
from core.run import CheckpointsConfig, LoggingConfig, RunConfig
from rlvr.config import RLVRConfig
from sft_dpo.dpo import DPOConfig
from sft_dpo.reward_model import RMConfig
from sft_dpo.sft import SFTConfig

REPO = Path(__file__).resolve().parents[2]
STAGES = [(SFTConfig, "configs/sft/tiny_cpu.yaml"), (DPOConfig, "configs/dpo/tiny_cpu.yaml"),
          (RMConfig, "configs/rm/tiny_cpu.yaml"), (RLVRConfig, "configs/rlvr/tiny_ppo.yaml")]


@pytest.mark.parametrize(("cls", "path"), STAGES)
def test_every_stage_spells_the_shared_settings_the_same_way(cls, path):
    overrides = ["seed=7", "checkpoints.save_every=3", "checkpoints.keep_last=4", "checkpoints.resume=never",
                 "logging.tensorboard=false", "logging.wandb_project=proj", "on_nonfinite=skip"]
    cfg = load_config(cls, REPO / path, overrides)
    assert issubclass(cls, RunConfig)
    assert cfg.seed == 7 and cfg.on_nonfinite == "skip"
    assert cfg.checkpoints == CheckpointsConfig(save_every=3, keep_last=4, resume="never")
    assert cfg.logging == LoggingConfig(tensorboard=False, wandb_project="proj")
    assert cfg.run_name == Path(cfg.output_dir).name  # W&B run name defaults to the run folder's name


@pytest.mark.parametrize(("cls", "path", "old", "new"), [
    (SFTConfig, "configs/sft/tiny_cpu.yaml", "keep_checkpoints=3", "checkpoints.keep_last"),
    (SFTConfig, "configs/sft/tiny_cpu.yaml", "save_every=1", "checkpoints.save_every"),
    (DPOConfig, "configs/dpo/tiny_cpu.yaml", "tensorboard=false", "logging.tensorboard"),
    (RMConfig, "configs/rm/tiny_cpu.yaml", "resume=never", "checkpoints.resume"),
    (RLVRConfig, "configs/rlvr/tiny_ppo.yaml", "train.keep_last=3", "checkpoints.keep_last"),
    (RLVRConfig, "configs/rlvr/tiny_ppo.yaml", "train.save_every=1", "checkpoints.save_every"),
    (RLVRConfig, "configs/rlvr/tiny_ppo.yaml", "train.on_nonfinite=skip", "on_nonfinite"),
])
def test_an_earlier_spelling_names_the_key_that_replaced_it(cls, path, old, new):
    with pytest.raises(ConfigError, match=rf"this key is now {new}.*\[from override '{old}'\]"):
        load_config(cls, REPO / path, [old])


def test_shipped_configs_load():
    from rlvr.pipeline import PipelineConfig
    from rlvr.sweep import SweepConfig

    by_folder = {"sft": SFTConfig, "dpo": DPOConfig, "rm": RMConfig, "rlvr": RLVRConfig, "pipeline": PipelineConfig,
                 "sweeps": SweepConfig}
    loaded = 0
    for folder, cls in by_folder.items():
        for path in sorted((REPO / "configs" / folder).glob("*.yaml")):
            load_config(cls, path)
            loaded += 1
    load_config(RLVRConfig, REPO / "configs/demo.yaml")
    assert loaded >= 20


def test_shipped_pipeline_and_sweep_overrides_name_existing_keys(monkeypatch):
    """The overrides a pipeline or sweep passes to its stages are only validated when the stage starts: check
    them here, so a renamed key cannot hide in a shipped config."""
    from rlvr.pipeline import RUNNERS, PipelineConfig, _import
    from rlvr.sweep import SweepConfig

    monkeypatch.chdir(REPO)
    checked = []  # load_config raises ConfigError naming the key and the override it came from
    for path in sorted((REPO / "configs/pipeline").glob("*.yaml")):
        for stage in load_config(PipelineConfig, path).stages:
            cfg = load_config(_import(RUNNERS[stage.kind].config_class), stage.config,
                              [*stage.overrides, "model=m", "output_dir=o"])
            checked.append((path.name, stage.kind, len(stage.overrides)))
            assert cfg.output_dir == "o"  # the overrides were applied, not dropped
    for path in sorted((REPO / "configs/sweeps").glob("*.yaml")):
        sweep = load_config(SweepConfig, path)
        load_config(_import(RUNNERS[sweep.stage].config_class), sweep.config, sweep.overrides)
        checked.append((path.name, sweep.stage, len(sweep.overrides)))
    assert len(checked) >= 4 and sum(n for *_, n in checked) > 0, checked
