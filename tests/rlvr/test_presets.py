"""`algorithm: NAME` presets (rlvr.presets): each expands to its paper's settings, keys set in the file or on the
command line win, the saved config.yaml holds the expanded settings and loads back to the same config, bad
values are refused naming the key, and rlvr.config stays importable without torch."""

from __future__ import annotations

import subprocess
import sys

import pytest
from rlvr_core_helpers import REPO

from core.config import ConfigError, config_to_dict, load_config, save_config
from rlvr.config import RLVRConfig

LEARN = REPO / "configs" / "rlvr" / "tiny_learn.yaml"
GRPO = REPO / "configs" / "rlvr" / "tiny_grpo.yaml"

EXPECTED = {  # what each paper sets (rlvr/presets.py; docs/algorithms.md)
    "ppo": {"advantage_estimator": "gae", "critic": True, "kl_in_reward": True},
    "grpo": {"advantage_estimator": "grpo", "critic": False, "kl_in_reward": False},
    "rloo": {"advantage_estimator": "rloo", "critic": False},
    "reinforce_pp": {"advantage_estimator": "reinforce_pp", "critic": False, "kl_in_reward": True,
                     "kl_estimator": "k1"},
    "dr_grpo": {"advantage_estimator": "grpo", "grpo_std_normalize": False,
                "loss_agg_mode": "seq-mean-token-sum-norm", "kl_coef": 0.0},
    "dapo": {"advantage_estimator": "grpo", "clip_eps": 0.2, "clip_eps_high": 0.28, "loss_agg_mode": "token-mean",
             "kl_coef": 0.0, "dynamic_sampling": True, "overlong_buffer": 3, "overlong_penalty": 1.0},
    "gspo": {"advantage_estimator": "grpo", "policy_loss": "gspo", "loss_agg_mode": "seq-mean-token-mean",
             "clip_eps": 3e-4, "clip_eps_high": 4e-4, "kl_coef": 0.0},
    "cispo": {"advantage_estimator": "grpo", "policy_loss": "cispo", "loss_agg_mode": "token-mean",
              "clip_eps": 1.0, "clip_eps_high": 4.0, "kl_coef": 0.0},
}


def _settings(cfg: RLVRConfig) -> dict:
    p = cfg.ppo
    return {"advantage_estimator": cfg.advantage_estimator, "critic": cfg.use_critic,
            "kl_in_reward": cfg.kl_in_reward, "kl_estimator": cfg.kl_estimator,
            "grpo_std_normalize": p.grpo_std_normalize, "loss_agg_mode": p.loss_agg_mode,
            "policy_loss": p.policy_loss, "clip_eps": p.clip_eps, "clip_eps_high": p.clip_eps_high,
            "kl_coef": p.kl_coef, "dynamic_sampling": cfg.rollout.dynamic_sampling,
            "overlong_buffer": cfg.rewards.overlong_buffer, "overlong_penalty": cfg.rewards.overlong_penalty}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_preset_expands_to_its_papers_settings(name, tmp_path):
    """On a config that sets none of the preset's keys (tiny_learn.yaml sets ppo.kl_coef, which would win)."""
    cfg = load_config(RLVRConfig, None, [f"algorithm={name}"], base={
        "model": "tiny-random", "output_dir": str(tmp_path), "data": {"train": ["x.jsonl"]},
        "rollout": {"prompts_per_step": 2, "samples_per_prompt": 4, "max_new_tokens": 16},
        "optim": {"per_device_batch_size": 4}})
    got = _settings(cfg)
    assert {k: got[k] for k in EXPECTED[name]} == EXPECTED[name]
    assert cfg.algorithm == name


def test_keys_set_in_the_file_or_on_the_command_line_win_over_the_preset():
    cfg = load_config(RLVRConfig, LEARN, ["algorithm=dapo", "ppo.clip_eps_high=0.3", "rewards.overlong_buffer=0",
                                          "rollout.dynamic_sampling=false"])
    assert cfg.ppo.clip_eps_high == 0.3 and cfg.rewards.overlong_buffer == 0 and not cfg.rollout.dynamic_sampling
    assert cfg.ppo.kl_coef == 0.01  # tiny_learn.yaml's, not DAPO's 0
    assert cfg.advantage_estimator == "grpo" and cfg.ppo.clip_eps == 0.2  # the rest of the preset still applies
    swapped = load_config(RLVRConfig, LEARN, ["algorithm=gspo", "ppo.advantage_estimator=reinforce_pp_baseline"])
    assert swapped.advantage_estimator == "reinforce_pp_baseline" and swapped.ppo.policy_loss == "gspo"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_the_saved_config_holds_the_expanded_settings_and_loads_back_the_same(name, tmp_path):
    cfg = load_config(RLVRConfig, LEARN, [f"algorithm={name}"])
    saved = save_config(cfg, tmp_path / "config.yaml")
    text = saved.read_text()
    assert f"advantage_estimator: {cfg.advantage_estimator}" in text
    again = load_config(RLVRConfig, saved)
    assert config_to_dict(again) == config_to_dict(cfg)
    assert config_to_dict(RLVRConfig.model_validate(config_to_dict(cfg))) == config_to_dict(cfg)  # the learners'


@pytest.mark.parametrize("overrides, key", [
    (["algorithm=dapo2"], "algorithm"),
    (["ppo.loss_agg_mode=seq-sum"], "ppo.loss_agg_mode"),
    (["ppo.policy_loss=sapo"], "ppo.policy_loss"),
    (["ppo.advantage_estimator=opo"], "ppo.advantage_estimator"),
    (["ppo.mismatch_correction=icepop"], "ppo.mismatch_correction"),
    (["ppo.kl_controller=adaptive", "ppo.kl_coef=0"], "ppo.kl_controller"),
    (["algorithm=dapo", "rollout.samples_per_prompt=1", "optim.per_device_batch_size=4"],
     "rollout.samples_per_prompt"),
    (["rewards.overlong_buffer=17"], "rewards.overlong_buffer"),
    (["ppo.clip_ratio_c=1.0", "ppo.policy_loss=dual_clip"], "ppo.clip_ratio_c"),
])
def test_bad_algorithm_settings_are_refused_naming_the_key(overrides, key):
    with pytest.raises(ConfigError, match=rf"\n  {key.replace('.', r'[.]')}: .*\[from override"):
        load_config(RLVRConfig, LEARN, overrides)


def test_the_config_module_stays_torch_free():
    code = "import sys, rlvr.config, rlvr.presets; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
