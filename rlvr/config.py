"""Typed config of the RLVR stage (`rlvr train --config FILE [a.b=value ...]`).

Batch arithmetic (explicit, because the LR/batch-size ratio is what SmolTulu studies):
    rollout batch      = rollout.prompts_per_step x rollout.samples_per_prompt sequences per step
    per learner rank   = rollout batch / dist.world_size
    one optimiser step = rollout batch / ppo.num_mini_batches sequences (the "effective batch" of PPO)
    micro-batch        = optim.per_device_batch_size; accumulation = per-rank mini-batch / micro-batch (derived)
Optimiser steps per RL step = ppo.epochs x ppo.num_mini_batches; the LR schedule counts optimiser steps.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from core.config import FrozenConfig
from core.run import OptimConfig, RunConfig


class DataConfig(FrozenConfig):
    """Prompt sources (rlvr.data.prompts.load_prompts forms: files, hub names, `procedural:TASK?n=N&seed=S`)."""

    train: list[str] = Field(..., min_length=1, description="prompt sources for training")
    eval: list[str] = Field(default_factory=list, description="held-out prompt sources for evaluation")
    eval_size: int | None = Field(None, ge=1, description="use only the first N eval prompts")
    max_prompt_tokens: int = Field(256, ge=8, description="longer prompts are dropped (and counted) at load time")
    max_dropped_fraction: float = Field(0.05, ge=0, le=1, description="fail the load if more rows are malformed")
    train_verifiers: dict[str, str] = Field(
        default_factory=dict, description="training rows whose verifier (`dataset`) is a key are scored by the "
        "value instead, e.g. {ifeval: ifeval_answer}: a reward other than the metric; data.eval rows keep theirs")


class RolloutConfig(FrozenConfig):
    prompts_per_step: int = Field(8, ge=1, description="prompts sampled per RL step")
    samples_per_prompt: int = Field(1, ge=1, description="responses per prompt (the group size for GRPO/RLOO)")
    max_new_tokens: int = Field(128, ge=1, description="response length cap (cut-off responses get no_eos_penalty)")
    temperature: float = Field(1.0, gt=0, description="sampling temperature (SmolTulu: 1.0)")
    top_p: float = Field(1.0, gt=0, le=1)
    eval_temperature: float = Field(0.0, ge=0, description="0 = greedy decoding for evaluation")
    async_steps: int = Field(0, ge=0, description="asynchronous rollouts: the generators produce the batches of "
                             "steps t+1..t+k while the learners train on step t (weights synced at step "
                             "boundaries; the PPO ratio uses the generators' log-probs, staleness logged). 0: "
                             "generate, then learn, each step")
    dynamic_sampling: bool = Field(False, description="DAPO's dynamic sampling: drop the prompts whose samples all "
                                   "got the same verifier score (no group-relative signal) and generate more "
                                   "prompts until prompts_per_step are kept (rlvr.rollouts); logged as "
                                   "dynamic_sampling/kept_fraction and /rounds")
    max_sampling_rounds: int = Field(3, ge=1, description="dynamic sampling: at most this many generation rounds "
                                     "of prompts_per_step prompts per step; a batch still short after them is "
                                     "filled with dropped groups, the earliest first (dynamic_sampling/"
                                     "filled_groups)")


class GenerationConfig(FrozenConfig):
    backend: Literal["auto", "vllm", "hf"] = Field("auto", description="auto: the faster of vLLM (when importable) "
                                                   "and HF for this model, device and thread count, by a short "
                                                   "probe cached in $RLVR_CACHE (rlvr.actors.backend_probe)")
    dtype: Literal["auto", "float32", "bfloat16"] | None = Field(
        None, description="generator weights; default float32 on CPU, bfloat16 on CUDA; auto: the faster on CPU "
                          "(same probe)")
    num_generators: int = Field(1, ge=1, description="generator actors (each owns an engine)")
    num_cpus: float = Field(1, ge=0, description="Ray CPUs per generator actor")
    num_gpus: float = Field(0, ge=0, description="Ray GPUs per generator actor")
    max_model_len: int | None = Field(None, description="vLLM context; default max_prompt_tokens + max_new_tokens")
    max_num_seqs: int = Field(64, ge=1, description="vLLM concurrent sequences")
    kv_cache_memory_bytes: int | None = Field(None, ge=2**20, description="vLLM KV cache size on CPU; default: "
                                              "room for max_num_seqs full-length sequences (at least 64 MiB)")
    gpu_memory_utilization: float = Field(0.4, gt=0, le=1, description="vLLM on CUDA")
    threads: int = Field(1, ge=1, description="torch threads inside each generator")


class PPOConfig(FrozenConfig):
    epochs: int = Field(1, ge=1, description="passes over each rollout batch")
    num_mini_batches: int = Field(1, ge=1, description="optimiser steps per epoch")
    clip_eps: float = Field(0.2, gt=0, description="the ratio's lower clip 1 - clip_eps (ppo, dual_clip, gspo, "
                            "cispo)")
    clip_eps_high: float | None = Field(None, gt=0, description="the upper clip 1 + clip_eps_high (DAPO's "
                                        "clip-higher); default clip_eps")
    clip_ratio_c: float = Field(3.0, gt=1, description="dual_clip: a token with a negative advantage loses at most "
                                "-A x clip_ratio_c (Ye et al. 2020)")
    value_clip_eps: float = Field(0.2, gt=0)
    gamma: float = Field(1.0, ge=0, le=1)
    lam: float = Field(0.95, ge=0, le=1)
    kl_coef: float = Field(0.05, ge=0, description="beta (SmolTulu/Tulu 3: 0.05)")
    kl_estimator: Literal["k1", "k2", "k3"] | None = Field(
        None, description="estimator of KL(policy||reference). Default: k1 when the KL is in the reward (Tulu 3), "
                          "k3 when it is in the loss; k1 is rejected there (its gradient ignores the reference)")
    log_ratio_clip: float = Field(20.0, gt=0, description="clamp log(pi/pi_old) to +-this before exp() in the "
                                                         "policy loss (OpenRLHF's guard against inf/NaN)")
    kl_in_reward: bool | None = Field(None, description="PPO: KL penalty in the token reward (default True). "
                                      "GRPO/RLOO: False puts beta*KL in the loss (the GRPO paper), True in the "
                                      "sequence reward before group normalisation (default False)")
    whiten_advantages: bool = Field(True, description="PPO: whiten GAE advantages over the batch (all ranks)")
    grpo_std_normalize: bool = Field(True, description="GRPO: divide by the group std (False = Dr. GRPO)")
    advantage_estimator: str | None = Field(None, description="a name in rlvr.algorithms.ADVANTAGE_ESTIMATORS: gae "
                                            "(with a critic), grpo, rloo, reinforce_pp, reinforce_pp_baseline; "
                                            "default: the algorithm's (rlvr.presets)")
    policy_loss: str = Field("ppo", description="policy loss, a name in rlvr.algorithms.POLICY_LOSSES: ppo, "
                             "dual_clip, gspo, cispo")
    loss_agg_mode: Literal["token-mean", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm"] = \
        Field("token-mean", description="how the policy loss (and the KL in it) averages over the optimiser "
              "step, verl's names (core.losses): per token; per sequence of token sums; per sequence of token "
              "means; token sums over sequences x rollout.max_new_tokens (Dr. GRPO)")
    mismatch_correction: Literal["off", "tis", "mask"] = Field(
        "off", description="correct the policy loss for the generator-vs-learner log-prob gap "
        "(rlvr.algorithms.mismatch): tis weights each token by min(pi_old/mu, tis_cap); mask weights each sequence "
        "by its ratio and drops those above mismatch_mask_threshold. Either recomputes the old log-probs on the "
        "learner (one more forward). The gap is logged every step either way (mismatch/abs_diff_mean, _max)")
    tis_cap: float = Field(2.0, gt=0, description="mismatch_correction tis: the cap C of the token weights")
    mismatch_mask_threshold: float = Field(2.0, gt=0, description="mismatch_correction mask: sequences whose "
                                           "ratio pi_old(y)/mu(y) is above this leave the loss")
    kl_controller: Literal["fixed", "adaptive"] = Field(
        "fixed", description="fixed: beta stays kl_coef; adaptive: beta starts at kl_coef and follows "
        "kl_target (Ziegler et al. 2019; rlvr.algorithms.kl), checkpointed, logged as kl/coef")
    kl_target: float = Field(6.0, gt=0, description="adaptive KL: the target mean sequence KL to the reference")
    kl_horizon: int = Field(10000, ge=1, description="adaptive KL: the horizon in samples (beta moves by at most "
                            "20% x samples per step / horizon per step)")
    value_loss: str = Field("clipped_mse", description="critic loss (PPO), a name in rlvr.algorithms.VALUE_LOSSES")
    reference_on_generators: bool = Field(False, description="the frozen reference policy runs in each generator "
                                          "process and scores its responses right after generating them, instead "
                                          "of on the learners (rlvr.actors.scoring). With rollout.async_steps > 0 "
                                          "that pass overlaps the learners' update; the learners hold no reference "
                                          "model. Costs one more copy of the model per generator")
    shared_prompt_forward: bool = Field(True, description="learner: compute each prompt once for all of its samples "
                                        "in a micro-batch (rlvr.actors.shared_prompt; same log-probs and gradients "
                                        "up to float rounding); off with flash-attention, which takes no 4D mask")


class RewardsConfig(FrozenConfig):
    verified_reward: float = Field(10.0, description="reward for a verified answer (x the score in [0, 1])")
    no_eos_penalty: float | None = Field(-10.0, description="replaces the reward of a response cut off without "
                                                          "EOS; null: cut-off responses keep their verified reward")
    num_workers: int = Field(2, ge=1, description="killable verifier worker processes")
    timeout_s: float = Field(5.0, gt=0, description="per-response verifier time limit")
    max_error_fraction: float = Field(0.5, ge=0, le=1, description="stop when more of a batch errors/times out")
    overlong_buffer: int = Field(0, ge=0, description="DAPO's soft overlong punishment: a response longer than "
                                 "rollout.max_new_tokens - overlong_buffer tokens loses up to overlong_penalty x "
                                 "verified_reward, linearly, all of it at the cap. 0: off")
    overlong_penalty: float = Field(1.0, ge=0, description="the soft overlong punishment at the length cap, as a "
                                    "fraction of verified_reward (DAPO: 1, the gap between right and wrong)")
    overlong_filter: bool = Field(False, description="mask responses cut off at rollout.max_new_tokens (no stop "
                                  "token) out of the policy loss and its normaliser (DAPO's overlong filtering)")


# weight_sync.bf16_tolerance: about twice the largest gap measured on SmolLM2-135M-Instruct's greedy probe (8 tokens,
# CPU, docs/gpu_check.md): bf16 weights vs fp32 0.107, bf16 sdpa vs eager attention 0.049, fp32 weights under bf16
# autocast (ZeRO 0) vs bf16 weights 0.021. Wrong or corrupted weights move it by more than 1.
BF16_TOLERANCE = 0.25


class WeightSyncConfig(FrozenConfig):
    transport: Literal["auto", "object_store", "nccl", "gloo"] = Field(
        "auto", description="auto: an NCCL group when learner rank 0 and every generator hold GPUs of their own, "
        "else the Ray object store (CPU, or learners and generators sharing a GPU); gloo: the same group over TCP "
        "(any layout). See rlvr/weight_sync.py")
    verify: bool = Field(False, description="after each sync, compare generator vs learner log-probs")
    verify_every: int = Field(1, ge=1, description="verify every N syncs (the first and post-resume always)")
    tolerance: float = Field(1e-3, gt=0, description="max |logprob difference| allowed by the check when learner "
                             "and generator both compute in fp32")
    bf16_tolerance: float = Field(BF16_TOLERANCE, gt=0, description="the same when either computes in bf16 (a "
                                  "bf16 GPU run): bf16 rounding and different kernels alone move the probe's "
                                  "log-probs by more than `tolerance` (rlvr/weight_check.py)")
    timeout_s: float = Field(120.0, gt=0, description="a sync that takes longer is an error, never a hang")


class ResourcesConfig(FrozenConfig):
    learner_num_cpus: float = Field(1, ge=0, description="Ray CPUs per learner rank")
    learner_num_gpus: float = Field(0, ge=0, description="Ray GPUs per learner rank")
    colocate: bool = Field(False, description="one placement group for learners and generators, packed (they share "
                                              "nodes/GPUs); else one packed group each")
    ray_num_cpus: int | None = Field(None, ge=1, description="local Ray only: CPUs to declare (default: enough "
                                                              "for every actor)")
    startup_timeout_s: float = Field(120.0, gt=0, description="placing the actors, the learners' rendezvous and "
                                     "forming the weight-sync group must each finish within this, else the run "
                                     "stops with an error naming the rank, node and address it waited on")
    call_timeout_s: float = Field(600.0, gt=0, description="max wait for one actor call (a learner update, a "
                                  "checkpoint, loading a model): a dead actor is reported at once, a hung one "
                                  "after this. Generation calls get more when long (min_decode_tokens_per_s)")
    min_decode_tokens_per_s: float = Field(2.0, gt=0, description="a generation call may take up to "
                                           "waves x max_new_tokens / this (waves: batches of max_num_seqs), if "
                                           "longer than call_timeout_s")

    def generation_timeout_s(self, max_new_tokens: int, requests: int, max_num_seqs: int) -> float:
        """Bound for one generation call of `requests` sequences: decoding is sequential in tokens, so a slow but
        live generator needs time in proportion to the response length."""
        waves = -(-max(requests, 1) // max(max_num_seqs, 1))
        return max(self.call_timeout_s, waves * max_new_tokens / self.min_decode_tokens_per_s)


class TrainConfig(FrozenConfig):
    total_steps: int = Field(10, ge=1, description="RL steps (each: rollout, score, update, sync)")
    eval_every: int = Field(0, ge=0, description="evaluate on data.eval every N steps (0: only at the end)")
    eval_at_start: bool = Field(False, description="also evaluate the starting policy (logged as step 0)")
    time_limit_minutes: float | None = Field(
        None, gt=0, description="end the run after the step during which this many minutes of the training loop "
        "(steps and evaluations, from the first step of this process) have passed: that step is then the last, "
        "evaluated and saved as at total_steps, and final/ is written. Schedules still span total_steps; a "
        "resumed run gets the limit afresh")
    progress: bool = Field(True, description="tqdm progress bar")


class RLVRConfig(RunConfig):
    """The RLVR stage. The fields of core.run.RunConfig (model, output_dir, seed, optim, engine, dist, checkpoints,
    logging, on_nonfinite) are shared with SFT/DPO/RM, the pipeline and the sweep; checkpoints.save_every=0 still
    checkpoints the last step."""

    model: str = Field(..., description="policy to start from: bundled name, local folder or hub name")
    algorithm: Literal["ppo", "grpo", "rloo", "reinforce_pp", "dr_grpo", "dapo", "gspo", "cispo"] = Field(
        "ppo", description="a preset (rlvr.presets): ppo (GAE + critic), grpo, rloo, reinforce_pp, dr_grpo, dapo, "
        "gspo, cispo; it fills in the settings of its paper that the config leaves unset")
    value_model: str | None = Field(None, description="critic initialisation (a reward model folder, as Tulu 3); "
                                                      "default: the policy with a fresh value head")
    tokenizer: str | None = Field(None, description="default: the model's")
    optim: OptimConfig = Field(default_factory=lambda: OptimConfig(lr=1e-6, lr_scheduler="linear"))
    value_optim: OptimConfig | None = Field(None, description="critic optimiser; default: optim")
    data: DataConfig
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    ppo: PPOConfig = Field(default_factory=PPOConfig)
    rewards: RewardsConfig = Field(default_factory=RewardsConfig)
    weight_sync: WeightSyncConfig = Field(default_factory=WeightSyncConfig)
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)

    @model_validator(mode="before")
    @classmethod
    def _expand_preset(cls, data: Any) -> Any:
        """`algorithm` names a preset: its settings fill the keys the config leaves unset (rlvr.presets)."""
        if not isinstance(data, dict):
            return data
        from rlvr.presets import expand  # torch-free

        return expand(data)

    @model_validator(mode="after")
    def _check_lora(self) -> RLVRConfig:
        if self.lora.enabled and self.lora.dropout > 0:
            raise ValueError("lora.dropout: the learners train with dropout off (their log-probs must be the "
                             "generators'), so an adapter dropout would be switched off unseen; set lora.dropout=0")
        return self

    @model_validator(mode="after")
    def _check_batch_arithmetic(self) -> RLVRConfig:
        batch = self.rollout_batch_size
        per_rank, rem = divmod(batch, self.dist.world_size)
        if rem:
            raise ValueError(f"rollout batch {batch} (prompts_per_step x samples_per_prompt) does not split over "
                             f"dist.world_size {self.dist.world_size} learner ranks")
        # lazy: the registries hold torch functions, and this module stays torch-free (`rlvr train --help`, the
        # preflight and the pipeline load it before anything heavy)
        from rlvr.algorithms import (
            ADVANTAGE_ESTIMATORS,
            GROUP_ESTIMATORS,
            POLICY_LOSSES,
            VALUE_LOSSES,
        )

        if self.advantage_estimator in GROUP_ESTIMATORS and self.rollout.samples_per_prompt < 2:
            raise ValueError(f"rollout.samples_per_prompt: the group estimator {self.advantage_estimator} "
                             f"(algorithm {self.algorithm}) needs at least 2 samples per prompt")
        if self.rollout.dynamic_sampling and self.rollout.samples_per_prompt < 2:
            raise ValueError("rollout.dynamic_sampling: filtering groups needs rollout.samples_per_prompt >= 2")
        if self.ppo.kl_controller == "adaptive" and self.ppo.kl_coef <= 0:
            raise ValueError("ppo.kl_controller: adaptive multiplies beta, so it needs ppo.kl_coef > 0")
        if self.rewards.overlong_buffer > self.rollout.max_new_tokens:
            raise ValueError(f"rewards.overlong_buffer: {self.rewards.overlong_buffer} is longer than "
                             f"rollout.max_new_tokens {self.rollout.max_new_tokens}")
        mini, rem = divmod(per_rank, self.ppo.num_mini_batches)
        if rem or mini == 0:
            raise ValueError(f"{per_rank} sequences per rank do not split into ppo.num_mini_batches "
                             f"{self.ppo.num_mini_batches} equal mini-batches")
        for name, opt in (("optim", self.optim), ("value_optim", self.value_optim)):
            if opt is None:
                continue
            if mini % opt.per_device_batch_size:
                raise ValueError(f"per-rank mini-batch {mini} is not a multiple of {name}.per_device_batch_size "
                                 f"{opt.per_device_batch_size}")
            derived = mini // opt.per_device_batch_size
            if opt.gradient_accumulation_steps not in (1, derived):
                raise ValueError(f"{name}.gradient_accumulation_steps is derived here ({derived} = per-rank "
                                 f"mini-batch {mini} / micro-batch {opt.per_device_batch_size}); leave it at 1")

        if not self.kl_in_reward and self.ppo.kl_coef > 0 and self.ppo.kl_estimator == "k1":
            # d/dtheta of (log pi - log pi_ref) is d log pi: the reference drops out of the gradient, so a k1 loss
            # term adds noise and never pulls the policy back toward the reference.
            raise ValueError("ppo.kl_estimator: k1 cannot be used with the KL in the loss (its gradient does not "
                             "depend on the reference policy); use k3 (the default there) or k2, or set "
                             "ppo.kl_in_reward=true")
        for key, name, registry in (("ppo.advantage_estimator", self.advantage_estimator, ADVANTAGE_ESTIMATORS),
                                    ("ppo.policy_loss", self.ppo.policy_loss, POLICY_LOSSES),
                                    ("ppo.value_loss", self.ppo.value_loss, VALUE_LOSSES)):
            if name not in registry:
                raise ValueError(f"{key}: {name!r} is not registered; known: {', '.join(registry)}")
        if self.max_model_len <= self.data.max_prompt_tokens:
            raise ValueError(f"generation.max_model_len {self.max_model_len} leaves no room to generate after "
                             f"prompts of up to data.max_prompt_tokens {self.data.max_prompt_tokens}")
        return self

    @property
    def rollout_batch_size(self) -> int:
        return self.rollout.prompts_per_step * self.rollout.samples_per_prompt

    @property
    def use_critic(self) -> bool:
        """A critic is trained where the advantages need its values (gae)."""
        return self.advantage_estimator == "gae"

    @property
    def advantage_estimator(self) -> str:
        """The name in rlvr.algorithms.ADVANTAGE_ESTIMATORS: ppo.advantage_estimator (every preset sets it)."""
        return self.ppo.advantage_estimator or ("gae" if self.algorithm == "ppo" else self.algorithm)

    @property
    def reference_micro_batch_size(self) -> int | None:
        """Micro-batch size of the reference policy the generators hold (None: they hold none)."""
        if self.ppo.reference_on_generators and self.ppo.kl_coef > 0:
            return self.optim.per_device_batch_size
        return None

    def advantage_params(self):
        """rlvr.algorithms.AdvantageParams from this config (shaping, KL, GAE and group settings)."""
        from rlvr.algorithms import AdvantageParams  # lazy: see _check_batch_arithmetic

        return AdvantageParams(group_size=self.rollout.samples_per_prompt,
                               verified_reward=self.rewards.verified_reward,
                               no_eos_penalty=self.rewards.no_eos_penalty, kl_coef=self.ppo.kl_coef,
                               kl_in_reward=self.kl_in_reward, kl_estimator=self.kl_estimator,
                               gamma=self.ppo.gamma, lam=self.ppo.lam, whiten=self.ppo.whiten_advantages,
                               std_normalize=self.ppo.grpo_std_normalize,
                               max_response_len=self.rollout.max_new_tokens,
                               overlong_buffer=self.rewards.overlong_buffer,
                               overlong_penalty=self.rewards.overlong_penalty * self.rewards.verified_reward)

    @property
    def kl_in_reward(self) -> bool:
        """ppo.kl_in_reward, or its default: in the reward for the token-reward estimators (gae, reinforce_pp)."""
        if self.ppo.kl_in_reward is not None:
            return self.ppo.kl_in_reward
        return self.advantage_estimator in ("gae", "reinforce_pp")

    @property
    def kl_estimator(self) -> str:
        """ppo.kl_estimator, or its default: k1 for the KL in the reward, k3 for the KL in the loss."""
        return self.ppo.kl_estimator or ("k1" if self.kl_in_reward else "k3")

    @property
    def optimizer_steps_per_rl_step(self) -> int:
        return self.ppo.epochs * self.ppo.num_mini_batches

    def learner_optim(self, role: Literal["policy", "value"]) -> OptimConfig:
        """The optimiser config with the derived accumulation steps filled in."""
        opt = self.optim if role == "policy" or self.value_optim is None else self.value_optim
        mini = self.rollout_batch_size // self.dist.world_size // self.ppo.num_mini_batches
        return opt.model_copy(update={"gradient_accumulation_steps": mini // opt.per_device_batch_size})

    @property
    def max_model_len(self) -> int:
        return self.generation.max_model_len or (self.data.max_prompt_tokens + self.rollout.max_new_tokens)
