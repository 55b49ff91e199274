"""Algorithm presets: `algorithm: NAME` (rlvr.config.RLVRConfig) expands to the settings of NAME's paper, and any
key set in the config file or on the command line wins over the preset's value (a preset fills only what was left
unset). The expansion happens when the config is validated, so the saved config.yaml of a run holds the concrete
settings it ran with. Plain data, no torch: the config module loads this before anything heavy.

    ppo           GAE with a critic (Schulman et al. 2017; Tulu 3's RLVR)
    grpo          group-normalised advantages (Shao et al. 2024, DeepSeekMath)
    rloo          leave-one-out baseline (Ahmadian et al. 2024)
    reinforce_pp  REINFORCE++ (Hu et al. 2025, arXiv 2501.03262): no critic, token-level KL penalty in the reward
                  (k1), returns normalised over the whole batch, PPO's clipped ratio
    dr_grpo       Dr. GRPO (Liu et al. 2025, arXiv 2503.20783): GRPO without the std division, losses summed per
                  response and divided by a constant (the length cap), no KL term
    dapo          DAPO (Yu et al. 2025, arXiv 2503.14476): clip-higher (0.2 / 0.28), token-mean loss, dynamic
                  sampling, soft overlong punishment over the last 20% of the length cap, no KL term
    gspo          GSPO (Zheng et al. 2025, arXiv 2507.18071): sequence-level ratio and clipping (3e-4 / 4e-4),
                  sequence-mean reduction, no KL term
    cispo         CISPO (MiniMax-M1, arXiv 2506.13585): clipped, detached importance weight on a REINFORCE loss, no
                  lower bound (eps_low 1), the weight capped at 5 (eps_high 4: TRL's recommended cap, from ScaleRL,
                  arXiv 2510.13786; MiniMax-M1 gives no value), token-mean, no KL
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

ALGORITHMS = ("ppo", "grpo", "rloo", "reinforce_pp", "dr_grpo", "dapo", "gspo", "cispo")

DAPO_OVERLONG_FRACTION = 0.2  # DAPO: a 4,096-token buffer before the 20,480-token cap


def preset(name: str, data: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The settings `algorithm: name` stands for, by config section. `data`: the raw config (for the values a
    preset derives, such as DAPO's overlong buffer from rollout.max_new_tokens)."""
    no_kl = {"kl_coef": 0.0}
    if name == "ppo":
        return {"ppo": {"advantage_estimator": "gae"}}
    if name in ("grpo", "rloo"):
        return {"ppo": {"advantage_estimator": name}}
    if name == "reinforce_pp":
        return {"ppo": {"advantage_estimator": "reinforce_pp", "kl_in_reward": True, "kl_estimator": "k1"}}
    if name == "dr_grpo":
        return {"ppo": {"advantage_estimator": "grpo", "grpo_std_normalize": False,
                        "loss_agg_mode": "seq-mean-token-sum-norm", **no_kl}}
    if name == "dapo":
        rollout = data.get("rollout") or {}
        max_new = int(rollout.get("max_new_tokens", 128)) if isinstance(rollout, Mapping) else 128
        return {"ppo": {"advantage_estimator": "grpo", "clip_eps": 0.2, "clip_eps_high": 0.28,
                        "loss_agg_mode": "token-mean", **no_kl},
                "rollout": {"dynamic_sampling": True},
                "rewards": {"overlong_buffer": max(1, round(DAPO_OVERLONG_FRACTION * max_new)),
                            "overlong_penalty": 1.0}}
    if name == "gspo":
        return {"ppo": {"advantage_estimator": "grpo", "policy_loss": "gspo", "loss_agg_mode": "seq-mean-token-mean",
                        "clip_eps": 3e-4, "clip_eps_high": 4e-4, **no_kl}}
    if name == "cispo":
        return {"ppo": {"advantage_estimator": "grpo", "policy_loss": "cispo", "loss_agg_mode": "token-mean",
                        "clip_eps": 1.0, "clip_eps_high": 4.0, **no_kl}}
    raise ValueError(f"algorithm: unknown {name!r}; known: {', '.join(ALGORITHMS)}")


def expand(data: Mapping[str, Any]) -> dict[str, Any]:
    """The raw config with its algorithm's preset filled in under the keys it leaves unset (a key given as null
    counts as set). Sections that are not mappings are left for validation to reject."""
    out = dict(data)
    name = out.get("algorithm", "ppo")
    if not isinstance(name, str) or name not in ALGORITHMS:
        return out  # validation names the bad value
    for section, values in preset(name, out).items():
        given = out.get(section)
        if given is None:
            given = {}
        elif hasattr(given, "model_dump"):  # a config object: its explicitly set fields
            given = given.model_dump(exclude_unset=True)
        if not isinstance(given, Mapping):
            continue
        out[section] = {**values, **given}
    return out
