"""Typed config of the RLVR stage (`rlvr train --config FILE [a.b=value ...]`).

Batch arithmetic (explicit, because the LR/batch-size ratio is what SmolTulu studies):
    rollout batch      = rollout.prompts_per_step x rollout.samples_per_prompt sequences per step
    per learner rank   = rollout batch / dist.world_size
    one optimiser step = rollout batch / ppo.num_mini_batches sequences (the "effective batch" of PPO)
    micro-batch        = optim.per_device_batch_size; accumulation = per-rank mini-batch / micro-batch (derived)
Optimiser steps per RL step = ppo.epochs x ppo.num_mini_batches; the LR schedule counts optimiser steps.
"""

from __future__ import annotations

from typing import Literal

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
    clip_eps: float = Field(0.2, gt=0)
    clip_eps_high: float | None = Field(None, gt=0, description="DAPO clip-higher; default clip_eps")
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
    policy_loss: str = Field("ppo_clip", description="policy loss, a name in rlvr.algorithms.POLICY_LOSSES")
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


class WeightSyncConfig(FrozenConfig):
    transport: Literal["auto", "object_store", "nccl", "gloo"] = Field(
        "auto", description="auto: an NCCL group when learner rank 0 and every generator hold GPUs of their own, "
        "else the Ray object store (CPU, or learners and generators sharing a GPU); gloo: the same group over TCP "
        "(any layout). See rlvr/weight_sync.py")
    verify: bool = Field(False, description="after each sync, compare generator vs learner log-probs")
    verify_every: int = Field(1, ge=1, description="verify every N syncs (the first and post-resume always)")
    tolerance: float = Field(1e-3, gt=0, description="max |logprob difference| allowed by the check")
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
    progress: bool = Field(True, description="tqdm progress bar")


class RLVRConfig(RunConfig):
    """The RLVR stage. The fields of core.run.RunConfig (model, output_dir, seed, optim, engine, dist, checkpoints,
    logging, on_nonfinite) are shared with SFT/DPO/RM, the pipeline and the sweep; checkpoints.save_every=0 still
    checkpoints the last step."""

    model: str = Field(..., description="policy to start from: bundled name, local folder or hub name")
    algorithm: Literal["ppo", "grpo", "rloo"] = Field("ppo", description="ppo: GAE + critic; grpo/rloo: no critic")
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

    @model_validator(mode="after")
    def _check_batch_arithmetic(self) -> RLVRConfig:
        batch = self.rollout_batch_size
        per_rank, rem = divmod(batch, self.dist.world_size)
        if rem:
            raise ValueError(f"rollout batch {batch} (prompts_per_step x samples_per_prompt) does not split over "
                             f"dist.world_size {self.dist.world_size} learner ranks")
        if self.algorithm != "ppo" and self.rollout.samples_per_prompt < 2:
            raise ValueError(f"algorithm {self.algorithm} needs rollout.samples_per_prompt >= 2 (group size)")
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
        # lazy: the registries hold torch functions, and this module stays torch-free (`rlvr train --help`, the
        # preflight and the pipeline load it before anything heavy)
        from rlvr.algorithms import ADVANTAGE_ESTIMATORS, POLICY_LOSSES, VALUE_LOSSES

        for key, name, registry in (("algorithm", self.advantage_estimator, ADVANTAGE_ESTIMATORS),
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
        return self.algorithm == "ppo"

    @property
    def advantage_estimator(self) -> str:
        """The name in rlvr.algorithms.ADVANTAGE_ESTIMATORS: gae for PPO, else the algorithm's own."""
        return "gae" if self.algorithm == "ppo" else self.algorithm

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
                               std_normalize=self.ppo.grpo_std_normalize)

    @property
    def kl_in_reward(self) -> bool:
        if self.ppo.kl_in_reward is not None:
            return self.ppo.kl_in_reward
        return self.algorithm == "ppo"

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
