"""One learner rank: the policy (trainable), the critic (trainable, PPO only) and the frozen reference policy,
each a DeepSpeed engine (core.engine), all ranks in one torch.distributed group.

Roles are colocated on every rank (as OpenRLHF's `--colocate_all_models`): the three models share the rank's
process and device, so a step needs no tensor traffic between role actors, and the data-parallel group is the
same for all three. On a small model that is the cheapest layout; a separate reference/critic placement would be a
change to this file only.

A step, as the driver (rlvr.trainer) calls it:
    prepare(samples)                  no-grad pass: reference log-probs, values and (only where needed, see
                                      `old_logprobs_source`) the policy's log-probs of this rank's samples, kept
                                      here and returned to the driver, which computes the advantages of the whole
                                      batch (rlvr.algorithms.compute_advantages)
    update(step, advantages, returns) epochs x mini-batches of clipped policy (and value) updates; the losses come
                                      from the registries the config names (ppo.policy_loss, ppo.value_loss)
No forward pass is done that the step does not need: none of the reference when ppo.kl_coef is 0, none of the
critic without one (GRPO/RLOO), and none of the policy in `prepare` when the update is the first and only one on
the batch and the KL is not in the reward (the old log-probs are then the update's own, detached). Micro-batches
are cut by length and trimmed of padding (rlvr.actors.batch). Each update reports its useful FLOPs and compute
seconds (rlvr.actors.perf) and the process's peak memory.
Loss normalisation (core.losses): every micro-batch loss is sum(per-token) / (the mini-batch's units of
ppo.loss_agg_mode over all ranks / world size), backward without DeepSpeed's 1/accumulation scaling; DeepSpeed's
rank averaging completes the mean, so the gradient is the same however the batch is sharded or accumulated.

Temperature: log-probs are always computed from logits / rollout.temperature (old, new and reference), the
distribution the samples were drawn from; the generators report theirs at the same temperature (the behaviour
policy of asynchronous rollouts).

A plain class: `Learner(cfg, 0, 1, master_addr, port)` joins a one-rank gloo group and builds its engines without
Ray (tests/rlvr/test_learner.py); rlvr.actors.group wraps it as a Ray actor, one per rank.
"""

from __future__ import annotations

import os
import random
import time
from typing import Any

import torch
from transformers import AutoTokenizer

from core.checkpoint import safe_deepspeed_load
from core.device import autocast_context, detect_device, set_threads
from core.engine import all_reduce_sum, barrier, build_engine, free_port, init_distributed, precision_for
from core.finite import count_nonfinite
from core.logging import get_logger
from core.losses import aggregate_loss, loss_units, per_rank_units, train_micro_batches
from core.model_factory import (
    adapter_disabled,
    adapter_only_checkpoints,
    build_model,
    has_lora,
    merged_state_dict,
    save_adapter,
    trainable_parameters,
    unwrap,
)
from rlvr.actors.batch import build_batch, gather_positions, select_rows, sequence_lengths
from rlvr.actors.node import list_files, read_text, whereami
from rlvr.actors.perf import flop_model, peak_rss_gib
from rlvr.actors.scoring import micro_batches, response_logprobs
from rlvr.actors.shared_prompt import (
    duplicate_prompt_lengths,
    supports_packing,
    use_segmented_attention,
    worth_sharing,
)
from rlvr.actors.weight_transport import join_group, send_broadcast
from rlvr.algorithms import (
    MISMATCH_CORRECTIONS,
    POLICY_LOSSES,
    VALUE_LOSSES,
    kl_estimate,
    logprob_gap,
)
from rlvr.config import RLVRConfig

log = get_logger(__name__)


def load_value_model(cfg: RLVRConfig) -> torch.nn.Module:
    """The critic, input_ids -> per-token values [B, L]: `sft_dpo.reward_model.load_value_model` on the reward
    model folder (`value_model`: Tulu 3 / SmolTulu initialise the critic from the RM), or on the policy folder when
    none is given (then the scalar head starts fresh, drawn from the seeded torch RNG). With `lora`: adapters on
    the backbone, the head trained in full (core.model_factory)."""
    return build_model("critic", cfg.value_model or cfg.model, lora=cfg.lora)


class Learner:
    """One rank. Plain class; the Ray actor is `ray.remote(Learner)` placed by rlvr.actors.group.LearnerGroup."""

    def __init__(self, cfg: dict[str, Any], rank: int, world_size: int, master_addr: str | None = None,
                 master_port: int | None = None):
        """Cheap: parses the config and picks the device. The group forms in `join`, the models load in `build`
        (both run here when `master_addr`/`master_port` are given: the no-Ray, world-size-1 use)."""
        self.cfg = cfg = RLVRConfig.model_validate(cfg)
        self.rank, self.world_size = rank, world_size
        self.device = detect_device(cfg.engine.device, cfg.engine.num_threads)
        set_threads(self.device.num_threads)
        self.torch_device = torch.device("cuda", torch.cuda.current_device()) if self.device.kind == "cuda" \
            else torch.device("cpu")
        self._data: dict[str, torch.Tensor] | None = None
        self._share_prompts = cfg.ppo.shared_prompt_forward  # and the model takes a 4D mask: see build
        self._flops, self._time, self._first_pass = 0.0, 0.0, {}
        if master_addr is not None and master_port is not None:
            self.join(master_addr, master_port)
            self.build()

    def info(self) -> dict[str, Any]:
        """Who and where this rank is (pid, node address and id, the GPUs Ray gave it), and the dtype its policy
        computes in (core.engine.precision_for: what the weight-sync check's tolerance depends on)."""
        return {**whereami(), "rank": self.rank, "device": self.device.kind,
                "compute_dtype": precision_for(self.cfg.engine, self.device).compute}

    def rendezvous_address(self) -> tuple[str, int]:
        """This node's address (as Ray knows it) and a TCP port free on it right now: where rank 0 hosts a
        group's TCPStore (the learners' group, the weight-sync group)."""
        node_ip = whereami()["node_ip"]
        return node_ip, free_port(node_ip)

    def join(self, master_addr: str, master_port: int, rendezvous_timeout_s: float | None = None,
             timeout_s: float | None = None) -> None:
        """Form the learners' torch.distributed group at rank 0's `master_addr:master_port`; a rank that cannot
        reach it within `rendezvous_timeout_s` raises (core.engine.RendezvousError)."""
        node_ip = whereami()["node_ip"]
        init_distributed(self.rank, self.world_size, master_addr=master_addr, master_port=master_port,
                         device=self.device, local_rank=0 if self.device.kind == "cuda" else None,
                         rendezvous_timeout_s=rendezvous_timeout_s, timeout_s=timeout_s, node_ip=node_ip)

    def build(self) -> dict[str, Any]:
        """Load the policy, reference and critic into DeepSpeed engines (collective under ZeRO-3)."""
        cfg, world_size = self.cfg, self.world_size
        torch.manual_seed(cfg.seed)  # a fresh value head: identical on every rank and every run
        tok = AutoTokenizer.from_pretrained(cfg.tokenizer or cfg.model)
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        total = cfg.train.total_steps * cfg.optimizer_steps_per_rl_step

        self.policy = build_engine(build_model("policy", cfg.model, lora=cfg.lora), cfg.learner_optim("policy"),
                                   cfg.engine, total_steps=total, world_size=world_size, device=self.device)
        self.lora = has_lora(self.policy.module)
        if self.lora:
            adapter_only_checkpoints(self.policy)
        # ppo.reference_on_generators: the samples bring their reference log-probs; with LoRA the reference is
        # the policy with its adapter disabled (`_reference_logprobs`): neither holds a second model
        self.ref = None
        if self.has_reference and not cfg.ppo.reference_on_generators and not self.lora:
            self.ref = build_engine(build_model("reference", cfg.model), cfg.optim, cfg.engine, total_steps=total,
                                    world_size=world_size, device=self.device, trainable=False)
        self.value = None
        if cfg.use_critic:
            self.value = build_engine(load_value_model(cfg), cfg.learner_optim("value"), cfg.engine,
                                      total_steps=total, world_size=world_size, device=self.device)
            if has_lora(self.value.module):
                adapter_only_checkpoints(self.value)
        self._share_prompts = self._share_prompts and supports_packing(self.policy.module)
        if self._share_prompts:  # responses attend to [prompt | themselves] only (rlvr.actors.shared_prompt)
            for engine in (self.policy, self.ref):
                if engine is not None:
                    use_segmented_attention(engine.module)
        self._flop_models = {"policy": flop_model(self.policy.module)}
        if self.value is not None:
            self._flop_models["value"] = flop_model(self.value.module)
        trained, params = trainable_parameters(self.policy.module)
        log.info("learner rank %d/%d ready (pid %d); policy: %d of %d parameters trained", self.rank, world_size,
                 os.getpid(), trained, params)
        return self.info()

    def read_text(self, path: str) -> str | None:
        """The file's text as this rank's node sees it (None when absent): the shared-folder check."""
        return read_text(path)

    def list_files(self, path: str) -> list[tuple[str, int]]:
        """(relative path, size) of every file under `path` as this rank's node sees it (checkpoint sealing)."""
        return list_files(path)

    # ---- forward passes ----
    def _shares(self, batch) -> bool:
        """Whether this micro-batch's policy/reference passes compute each shared prompt once."""
        return self._share_prompts and worth_sharing(batch)

    def _autocast(self):
        """bf16 matmuls on a CPU that has them (engine.cpu_autocast); fp32 weights and log-softmax either way."""
        return autocast_context(self.cfg.engine.cpu_autocast, self.device)

    def _logprobs(self, engine, batch, *, with_entropy: bool = False):
        """Response-token log-probs [B, T] (and entropies) at the rollout temperature (rlvr.actors.scoring)."""
        with self._autocast():
            return response_logprobs(engine, batch, pad_id=self.pad_id, share_prompts=self._share_prompts,
                                     temperature=self.cfg.rollout.temperature,
                                     with_entropy=with_entropy)

    def _values(self, batch):
        with self._autocast():
            values = self.value(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        return gather_positions(values.float(), batch["index"])

    def _micro_batches(self, batch: dict[str, torch.Tensor], role: str = "policy"):
        """(row indices, micro-batch) pairs of the role's micro-batch size (rlvr.actors.scoring)."""
        return micro_batches(batch, self.cfg.learner_optim(role).per_device_batch_size, self._share_prompts)

    def _count(self, role: str, micro: dict[str, torch.Tensor], passes: int) -> None:
        """Add the useful FLOPs of `passes` forward-equivalents of `role` on `micro` (rlvr.actors.perf)."""
        fm = self._flop_models[role]
        flops = fm.forward(sequence_lengths(micro), int(micro["response_mask"].sum()))
        if role == "policy" and self._shares(micro):
            flops -= fm.prompt_copies(duplicate_prompt_lengths(micro))
        self._flops += passes * flops

    @property
    def has_reference(self) -> bool:
        """Whether the step uses reference log-probs (the KL to the reference: ppo.kl_coef > 0)."""
        return self.cfg.ppo.kl_coef > 0

    @property
    def old_logprobs_source(self) -> str:
        """Where the PPO ratio's old log-probs come from:
        behaviour  asynchronous rollouts (rollout.async_steps > 0): the generator's log-probs of the sampled tokens
                   at the learner's temperature, i.e. the policy that produced them (it may be k updates old)
        recompute  a no-grad forward in `prepare`: needed when more than one update uses the batch (epochs x
                   mini-batches > 1: later updates keep the ratio to the policy before the first), when the KL
                   is in the reward (the advantages need the policy's log-probs), or when ppo.mismatch_correction
                   compares them with the generator's (also asynchronously: decoupled PPO's proximal policy)
        current    the first and only update on this batch: old = the update's own log-probs, detached (the
                   same weights), so `prepare` needs no policy forward"""
        cfg = self.cfg
        if cfg.ppo.mismatch_correction != "off":
            return "recompute"
        if cfg.rollout.async_steps > 0:
            return "behaviour"
        if cfg.optimizer_steps_per_rl_step > 1 or (cfg.kl_in_reward and cfg.ppo.kl_coef > 0):
            return "recompute"
        return "current"

    @torch.no_grad()
    def sequence_logprobs(self, prompt_ids: list[int], response_ids: list[int]) -> list[float]:
        """Raw (temperature 1) log-probs of `response_ids` after `prompt_ids` under the current policy: the
        reference side of the weight-sync check, in the policy engine's precision (`info()["compute_dtype"]`;
        engine.cpu_autocast does not apply)."""
        batch = self._to_device(build_batch([{"prompt_ids": prompt_ids, "response_ids": response_ids}], self.pad_id))
        lp, _ = response_logprobs(self.policy, batch, pad_id=self.pad_id, share_prompts=False, temperature=1.0)
        return lp[0, : len(response_ids)].tolist()

    def _to_device(self, batch):
        return {k: v.to(self.torch_device) for k, v in batch.items()}

    # ---- step part 1 ----
    @torch.no_grad()
    def prepare(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        """The no-grad pass over this rank's samples: reference log-probs, values and, where the update needs
        them first (`old_logprobs_source` recompute), the policy's log-probs; kept here for `update` and returned
        for the driver's compute_advantages (rlvr.algorithms).

        `samples[i]["logprobs"]`: the generator's log-probs of the response tokens at the sampling temperature
        (the behaviour policy); required with asynchronous rollouts and with ppo.mismatch_correction.
        Returns logprobs (the old policy's: None when they come from the update itself), ref_logprobs (None
        without a reference), mask and values (None without a critic), each [b, T] on CPU, 0 on padding (T: this
        rank's longest response). The generator-vs-learner gap is measured in `update`."""
        t0 = time.perf_counter()
        self._flops = 0.0
        batch = self._to_device(build_batch(samples, self.pad_id))
        B, T = batch["response_mask"].shape
        source = self.old_logprobs_source
        needs_gen = source == "behaviour" or self.cfg.ppo.mismatch_correction != "off"
        if any(s.get("logprobs") is not None for s in samples) or needs_gen:
            gen = torch.zeros((B, T), dtype=torch.float32)
            for i, s in enumerate(samples):
                lp = s.get("logprobs")
                if lp is None or len(lp) != len(s["response_ids"]):
                    raise ValueError(f"learner rank {self.rank}: sample {i} has {0 if lp is None else len(lp)} "
                                     f"generator log-probs for {len(s['response_ids'])} response tokens")
                gen[i, : len(lp)] = torch.tensor(lp, dtype=torch.float32)
            batch["gen_logprobs"] = gen.to(self.torch_device)
        old = torch.zeros((B, T), device=self.torch_device) if source == "recompute" else None
        ref = torch.zeros((B, T), device=self.torch_device) if self.has_reference else None
        if ref is not None and self.cfg.ppo.reference_on_generators:  # scored on the generators
            for i, sample in enumerate(samples):
                lp = sample.get("ref_logprobs")
                if lp is None or len(lp) != len(sample["response_ids"]):
                    raise ValueError(f"learner rank {self.rank}: sample {i} has {0 if lp is None else len(lp)} "
                                     f"reference log-probs for {len(sample['response_ids'])} response tokens "
                                     "(ppo.reference_on_generators: the generators score them)")
                ref[i, : len(lp)] = torch.tensor(lp, dtype=torch.float32, device=self.torch_device)
        values = torch.zeros((B, T), device=self.torch_device) if self.value is not None else None
        self.policy.train(False)
        if self.value is not None:
            self.value.train(False)
        for rows, mb in self._micro_batches(batch):
            t = mb["response_mask"].shape[1]
            if old is not None:
                old[rows, :t] = self._logprobs(self.policy, mb)[0]
                self._count("policy", mb, 1)
            if self.ref is not None:
                ref[rows, :t] = self._logprobs(self.ref, mb)[0]
                self._count("policy", mb, 1)
            elif ref is not None and self.lora and not self.cfg.ppo.reference_on_generators:
                with adapter_disabled(self.policy.module):  # the base model: the reference
                    ref[rows, :t] = self._logprobs(self.policy, mb)[0]
                self._count("policy", mb, 1)
            if values is not None:
                values[rows, :t] = self._values(mb)
                self._count("value", mb, 1)
        if source == "behaviour":
            old = batch["gen_logprobs"]
        batch["old_logprobs"] = old  # None: the update's own, detached
        batch["ref_logprobs"] = ref
        if values is not None:
            batch["old_values"] = values
        self._data = batch
        self._time = time.perf_counter() - t0
        mask = batch["response_mask"]

        def out(x):
            return None if x is None else (x * mask).cpu()

        return {"logprobs": out(old), "ref_logprobs": out(ref), "mask": mask.cpu(), "values": out(values)}

    # ---- step part 2 ----
    def update(self, step: int, advantages: torch.Tensor, returns: torch.Tensor | None = None,
               sample_mask: torch.Tensor | None = None, kl_coef: float | None = None) -> dict[str, float]:
        """Epochs x mini-batches of policy (and value) updates on the prepared samples, with the losses the config
        names: `advantages` [b, T] from compute_advantages (the rows and width `prepare` returned), `returns`
        [b, T] for the critic, `sample_mask` [b] (0: out of the policy loss and its normaliser;
        rewards.overlong_filter), `kl_coef` this step's beta (default ppo.kl_coef; ppo.kl_controller).

        Besides the per-token means of the losses' statistics it returns sums over this rank's rows from the
        first pass (`sum/...`, added up over ranks by the driver; `max/...`: the maximum): the KL where `prepare`
        did not compute it, the generator-vs-learner gap (rlvr.algorithms.mismatch), what the mismatch correction
        cut, and the useful FLOPs and seconds of prepare + update (rlvr.actors.perf)."""
        cfg, d = self.cfg, self._data
        if d is None:
            raise RuntimeError("update() before prepare()")
        t0 = time.perf_counter()
        mask = d["response_mask"]
        if tuple(advantages.shape) != tuple(mask.shape):
            raise ValueError(f"learner rank {self.rank}: advantages of shape {tuple(advantages.shape)} for a prepared "
                             f"batch of shape {tuple(mask.shape)}")
        d["advantages"] = advantages.to(self.torch_device, torch.float32) * mask
        d["loss_mask"] = mask if sample_mask is None else \
            mask * sample_mask.to(self.torch_device, torch.float32).view(-1, 1)
        self._kl_coef = cfg.ppo.kl_coef if kl_coef is None else float(kl_coef)
        if self.value is not None:
            if returns is None:
                raise ValueError(f"learner rank {self.rank}: the critic needs returns (algorithm ppo)")
            d["returns"] = returns.to(self.torch_device, torch.float32)

        n = mask.shape[0]
        mb_size = n // cfg.ppo.num_mini_batches
        sums: dict[str, float] = {}
        self._first_pass: dict[str, float] = {}
        counts = 0
        for epoch in range(cfg.ppo.epochs):
            # a stateless, seeded shuffle: the same on resume, independent of any global RNG
            order = list(range(n))
            random.Random(f"minibatch/{cfg.seed}/{step}/{epoch}/{self.rank}").shuffle(order)
            for k in range(cfg.ppo.num_mini_batches):
                stats = self._train_mini_batch(select_rows(d, order[k * mb_size:(k + 1) * mb_size]),
                                               first_pass=epoch == 0)
                for key, v in stats.items():
                    sums[key] = sums.get(key, 0.0) + v
                counts += 1
        metrics = {k: v / counts for k, v in sums.items()}
        metrics["lr"] = self.policy.get_lr()[0]
        if self.value is not None:
            metrics["value/lr"] = self.value.get_lr()[0]
        engines = [e for e in (self.policy, self.value) if e is not None]
        metrics["nonfinite/weights"] = float(sum(count_nonfinite(e.module) for e in engines))  # checked by the driver
        metrics.update({f"max/{k}" if k == "gap_max" else f"sum/{k}": v for k, v in self._first_pass.items()})
        metrics["sum/flops"] = self._flops
        metrics["sum/learner_compute_s"] = self._time + time.perf_counter() - t0
        metrics["memory/learner_peak_rss_gib"] = peak_rss_gib()
        return metrics

    def _train_mini_batch(self, mb: dict[str, torch.Tensor], *, first_pass: bool) -> dict[str, float]:
        """One optimiser step of the policy (and of the critic) on a mini-batch. The policy loss is normalised by
        the mini-batch's units of ppo.loss_agg_mode over all ranks, the critic's by its tokens (core.losses)."""
        cfg, ppo = self.cfg, self.cfg.ppo
        loss_mask = mb["loss_mask"]
        units = torch.tensor([mb["response_mask"].sum().item(),
                              loss_units(loss_mask, ppo.loss_agg_mode, horizon=cfg.rollout.max_new_tokens)],
                             dtype=torch.float64, device=self.torch_device)
        global_tokens, global_units = all_reduce_sum(units).tolist()
        num_tokens = per_rank_units(global_tokens, self.world_size)
        num_units = per_rank_units(global_units, self.world_size)
        policy_loss = POLICY_LOSSES[ppo.policy_loss]
        correction = MISMATCH_CORRECTIONS.get(ppo.mismatch_correction)  # None: off
        kl_in_loss = not cfg.kl_in_reward and self.has_reference
        # what `prepare` left to the first pass: the KL of the update's own log-probs
        kl_here = self.has_reference and mb["old_logprobs"] is None
        recomputed = self.old_logprobs_source == "recompute"
        acc = self._first_pass

        def add(key: str, value: float) -> None:
            acc[key] = max(acc.get(key, 0.0), value) if key == "gap_max" else acc.get(key, 0.0) + value

        def policy_step(micro):
            m, resp = micro["loss_mask"], micro["response_mask"]
            lp, ent = self._logprobs(self.policy, micro, with_entropy=True)
            self._count("policy", micro, 3)
            old = lp.detach() if micro["old_logprobs"] is None else micro["old_logprobs"]
            weights = None
            if correction is not None:
                weights, corrected = correction(ppo, {"old_logprobs": old, "gen_logprobs": micro["gen_logprobs"],
                                                      "mask": m})
            loss, pm = policy_loss(ppo, {"logprobs": lp, "old_logprobs": old, "advantages": micro["advantages"],
                                         "mask": m, "weights": weights, "num_units": num_units})
            kl = None
            if kl_in_loss or (first_pass and kl_here):
                kl = kl_estimate(lp, micro["ref_logprobs"], cfg.kl_estimator)
            if kl_in_loss:
                loss = loss + self._kl_coef * aggregate_loss(kl, m, num_units=num_units, mode=ppo.loss_agg_mode)
            if first_pass:
                with torch.no_grad():
                    if kl_here:
                        add("kl", (kl.detach() * resp).sum().item())
                    if "gen_logprobs" in micro:  # the engines' gap, on the learner's log-probs before this update
                        learner_lp = micro["old_logprobs"] if recomputed else lp.detach()
                        for key, value in logprob_gap(learner_lp, micro["gen_logprobs"], resp).items():
                            add(key, value)
                    if correction is not None:
                        for key, value in corrected.items():
                            add(f"is_{key}", value)
            w = m.sum().item()  # token-weighted sums of the per-micro-batch means
            return loss, {"policy/entropy": (ent * m).sum().item(), **{k: v * w for k, v in pm.items()}}

        stats = self._fit(self.policy, "policy", mb, policy_step, tokens=loss_mask.sum().item())
        if self.value is not None:
            value_loss = VALUE_LOSSES[ppo.value_loss]

            def value_step(micro):
                m = micro["response_mask"]
                self._count("value", micro, 3)
                loss, vm = value_loss(ppo, {"values": self._values(micro), "old_values": micro["old_values"],
                                            "returns": micro["returns"], "mask": m, "num_units": num_tokens})
                w = m.sum().item()
                return loss, {k: v * w for k, v in vm.items() if k != "value/loss"}

            stats.update(self._fit(self.value, "value", mb, value_step, tokens=mb["response_mask"].sum().item()))
        return stats

    def _fit(self, engine, role: str, mb: dict[str, torch.Tensor], loss_fn, *, tokens: float) -> dict[str, float]:
        """The micro-batch loop of one engine (core.losses.train_micro_batches): `<role>/loss`, grad norm, skipped
        steps, and loss_fn's token-weighted statistics as per-token means over the mini-batch's `tokens` on this
        rank."""
        engine.train()
        micro = (m for _, m in self._micro_batches(mb, role))
        out = train_micro_batches(engine, micro, loss_fn, skip_nonfinite=self.cfg.on_nonfinite == "skip")
        tokens = max(tokens, 1)
        return {f"{role}/loss": out.loss,
                f"{role}/grad_norm": float("nan") if out.grad_norm is None else out.grad_norm,
                f"{role}/skipped_fraction": float(out.skipped), **{k: v / tokens for k, v in out.stats.items()}}

    # ---- weights out ----
    def full_state_dict(self) -> dict[str, torch.Tensor] | None:
        """The policy's full weights on CPU (rank 0; None elsewhere). Under ZeRO-3 every rank must call this:
        the parameters are gathered collectively first. On CPU the tensors are the live parameters, not copies:
        a Ray return is serialised before the actor runs its next call, and the collective transports send before
        they return. Tied tensors are all sent (vLLM reloads a tied output embedding only from its own name)."""
        module = self.policy.module
        if self.cfg.engine.zero_stage == 3:
            import deepspeed  # lazy: only under ZeRO-3; the driver imports this module to wrap it in Ray

            with deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None):
                sd = {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()} \
                    if self.rank == 0 else None
            return sd
        if self.rank != 0:
            return None
        on_cpu = self.torch_device.type == "cpu"
        # LoRA: the generators load plain weights, the adapters merged into new tensors (core.model_factory)
        sd = merged_state_dict(module) if self.lora else module.state_dict()
        return {k: v.detach().contiguous() if on_cpu else v.detach().to("cpu", copy=True).contiguous()
                for k, v in sd.items()}

    def join_weight_sync(self, group_args: dict[str, Any]) -> None:
        """Collective transport: rank 0 hosts and joins the weight-sync group (rank 0 of it); other ranks do
        not take part."""
        if self.rank == 0:
            join_group(device=str(self.torch_device), rank=0, **group_args)

    def broadcast_weights(self, group_args: dict[str, Any]) -> int:
        """Collective transport: rank 0 broadcasts each tensor to the generators (rlvr.actors.weight_transport)."""
        sd = self.full_state_dict()
        if self.rank != 0:
            return 0
        return send_broadcast(sd, device=str(self.torch_device), **group_args)

    def weight_spec(self) -> list[tuple[str, str, list[int]]]:
        """(name, dtype, full shape) of every tensor `full_state_dict` returns, in order (ZeRO-3 partitions
        parameters: their full shape is `ds_shape`)."""
        if self.lora:  # the merged weights have the base model's names, shapes and dtypes
            return [(k, str(v.dtype).removeprefix("torch."), [int(x) for x in v.shape])
                    for k, v in merged_state_dict(self.policy.module).items()]
        spec = []
        for k, v in self.policy.module.state_dict(keep_vars=True).items():  # Parameters keep `ds_shape`
            shape = getattr(v, "ds_shape", None) or v.shape
            spec.append((k, str(v.dtype).removeprefix("torch."), [int(x) for x in shape]))
        return spec

    # ---- checkpoints ----
    def save(self, path: str, step: int, write_hf: bool = True) -> None:
        """Every rank: DeepSpeed state (weights, optimiser, scheduler) of the trainable engines; rank 0 also
        the HF-format policy in `path/hf` and the value head. With LoRA the DeepSpeed state holds the trainable
        tensors only (adapters, the critic's head) and their optimiser state: the base weights are `model`."""
        self.policy.save_checkpoint(os.path.join(path, "policy"), tag="ds", client_state={"step": step},
                                    exclude_frozen_parameters=self.lora)
        if self.value is not None:
            self.value.save_checkpoint(os.path.join(path, "value"), tag="ds", client_state={"step": step},
                                       exclude_frozen_parameters=has_lora(self.value.module))
        if write_hf:
            self.save_hf(os.path.join(path, "hf"))

    def save_hf(self, out: str) -> None:
        sd = self.full_state_dict()
        if self.rank != 0:
            return
        unwrap(self.policy.module).save_pretrained(out, state_dict=sd, safe_serialization=True)
        if self.lora:  # the adapter alone too, in peft's format, for peft users
            save_adapter(self.policy.module, os.path.join(out, "adapter"))
        AutoTokenizer.from_pretrained(self.cfg.tokenizer or self.cfg.model).save_pretrained(out)

    def load(self, path: str) -> int:
        with safe_deepspeed_load():  # every torch.load weights_only=True: a pickle payload never runs
            _, client = self.policy.load_checkpoint(os.path.join(path, "policy"), tag="ds",
                                                    load_module_strict=not self.lora)
            if self.value is not None:
                self.value.load_checkpoint(os.path.join(path, "value"), tag="ds",
                                           load_module_strict=not has_lora(self.value.module))
        return int(client["step"])

    def barrier(self) -> None:
        barrier()
