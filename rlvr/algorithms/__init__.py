"""RL algorithms as pure tensor functions: no Ray, DeepSpeed or I/O. Shapes are stated in each docstring;
B = sequences, T = response tokens (right-padded), `mask` [B, T] is 1 on real response tokens.

Selected by name from the config through the registries: `ADVANTAGE_ESTIMATORS` (ppo.advantage_estimator: gae,
grpo, rloo, reinforce_pp, reinforce_pp_baseline), `POLICY_LOSSES` (ppo.policy_loss: ppo, dual_clip, gspo, cispo),
`VALUE_LOSSES` (ppo.value_loss), `KL_ESTIMATORS` (ppo.kl_estimator), `KL_CONTROLLERS` (ppo.kl_controller),
`MISMATCH_CORRECTIONS` (ppo.mismatch_correction: tis, mask) and core.losses.LOSS_AGG_MODES (ppo.loss_agg_mode).
The presets that combine them (algorithm: dr_grpo, dapo, gspo, cispo, reinforce_pp) are rlvr.presets.
"""

from core.losses import LOSS_AGG_MODES, aggregate_loss, loss_units
from rlvr.algorithms.advantages import (
    ADVANTAGE_ESTIMATORS,
    GROUP_ESTIMATORS,
    AdvantageParams,
    compute_advantages,
    compute_gae,
    group_advantages,
)
from rlvr.algorithms.kl import KL_CONTROLLERS, KL_ESTIMATORS, adaptive_kl_coef, kl_estimate
from rlvr.algorithms.logprobs import (
    entropy_from_logits,
    logprobs_from_logits,
    masked_mean,
    masked_whiten,
    token_logprobs,
)
from rlvr.algorithms.losses import (
    POLICY_LOSSES,
    VALUE_LOSSES,
    cispo_policy_loss,
    gspo_policy_loss,
    ppo_policy_loss,
    value_loss,
)
from rlvr.algorithms.mismatch import (
    MISMATCH_CORRECTIONS,
    logprob_gap,
    sequence_mask_weights,
    truncated_is_weights,
)
from rlvr.algorithms.rewards import overlong_penalty, sequence_rewards, shape_token_rewards
from rlvr.algorithms.sampling import informative_groups

__all__ = [
    "ADVANTAGE_ESTIMATORS", "GROUP_ESTIMATORS", "KL_CONTROLLERS", "KL_ESTIMATORS", "LOSS_AGG_MODES",
    "MISMATCH_CORRECTIONS", "POLICY_LOSSES", "VALUE_LOSSES", "AdvantageParams", "adaptive_kl_coef",
    "aggregate_loss", "cispo_policy_loss", "compute_advantages", "compute_gae", "entropy_from_logits",
    "group_advantages", "gspo_policy_loss", "informative_groups", "kl_estimate", "logprob_gap",
    "logprobs_from_logits", "loss_units", "masked_mean", "masked_whiten", "overlong_penalty", "ppo_policy_loss",
    "sequence_mask_weights", "sequence_rewards", "shape_token_rewards", "token_logprobs", "truncated_is_weights",
    "value_loss",
]
