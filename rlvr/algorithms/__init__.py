"""RL algorithms as pure tensor functions: no Ray, DeepSpeed or I/O. Shapes are stated in each docstring;
B = sequences, T = response tokens (right-padded), `mask` [B, T] is 1 on real response tokens.

Selected by name from the config through the registries: `ADVANTAGE_ESTIMATORS` (compute_advantages: gae, grpo,
rloo), `POLICY_LOSSES` (ppo.policy_loss), `VALUE_LOSSES` (ppo.value_loss) and `KL_ESTIMATORS` (ppo.kl_estimator).
"""

from core.losses import aggregate_loss
from rlvr.algorithms.advantages import (
    ADVANTAGE_ESTIMATORS,
    AdvantageParams,
    compute_advantages,
    compute_gae,
    group_advantages,
)
from rlvr.algorithms.kl import KL_ESTIMATORS, kl_estimate
from rlvr.algorithms.logprobs import entropy_from_logits, logprobs_from_logits, masked_mean, masked_whiten
from rlvr.algorithms.losses import POLICY_LOSSES, VALUE_LOSSES, ppo_policy_loss, value_loss
from rlvr.algorithms.rewards import sequence_rewards, shape_token_rewards

__all__ = [
    "ADVANTAGE_ESTIMATORS", "KL_ESTIMATORS", "POLICY_LOSSES", "VALUE_LOSSES", "AdvantageParams",
    "aggregate_loss", "compute_advantages", "compute_gae", "entropy_from_logits", "group_advantages",
    "kl_estimate", "logprobs_from_logits", "masked_mean", "masked_whiten", "ppo_policy_loss", "sequence_rewards",
    "shape_token_rewards", "value_loss",
]
