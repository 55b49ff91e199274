"""One learner rank: the policy (trainable), the critic (trainable, PPO only) and the frozen reference policy,
each a DeepSpeed engine (core.engine), all ranks in one torch.distributed group.

Roles are colocated on every rank (as OpenRLHF's `--colocate_all_models`): the three models share the rank's
process and device, so a step needs no tensor traffic between role actors, and the data-parallel group is the
same for all three. On a small model that is the cheapest layout; a separate reference/critic placement would be a
change to this file only.

A step, as the driver calls it:
    prepare(samples)      no-grad pass: old log-probs, reference log-probs, values (stored on the rank);
                          returns per-sample sequence KL for the driver's group advantages
    update(advantages)    PPO: token rewards (verified reward, no-EOS penalty, -beta*KL) + GAE + whitening
                          (statistics over all ranks); GRPO/RLOO: the driver's per-sample advantages.
                          Then epochs x mini-batches of clipped policy (and value) updates.
Loss normalisation: every micro-batch loss is sum(per-token) / (global tokens of its mini-batch / world size),
backward without DeepSpeed's 1/accumulation scaling; DeepSpeed's gradient averaging over ranks completes the
mean, so the gradient is the same however the batch is sharded or accumulated.

Temperature: log-probs are always computed from logits / rollout.temperature (old, new and reference), the
distribution the samples were drawn from.
"""

from __future__ import annotations

import os
import random
from typing import Any

import torch

from core.finite import count_nonfinite, step_engine
from core.logging import get_logger
from rlvr.algorithms import (
    aggregate_loss,
    compute_gae,
    entropy_from_logits,
    kl_estimate,
    logprobs_from_logits,
    masked_mean,
    ppo_policy_loss,
    shape_token_rewards,
    value_loss,
)
from rlvr.config import RLVRConfig

log = get_logger(__name__)


def load_value_model(cfg: RLVRConfig) -> torch.nn.Module:
    """The critic, input_ids -> per-token values [B, L]: `sft_dpo.reward_model.load_value_model` on the reward
    model folder (`value_model`: Tulu 3 / SmolTulu initialise the critic from the RM), or on the policy folder when
    none is given (then the scalar head starts fresh, drawn from the seeded torch RNG)."""
    from sft_dpo.reward_model import load_value_model as load_rm_value

    return load_rm_value(cfg.value_model or cfg.model)


# ---- batch layout ----

def build_batch(samples: list[dict[str, Any]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded prompt+response sequences and the response-token view of them.

    input_ids, attention_mask: [B, L]; response_ids, response_mask: [B, T]; index [B, T] = sequence position
    whose logits predict response token t (prompt_len - 1 + t)."""
    B = len(samples)
    L = max(len(s["prompt_ids"]) + len(s["response_ids"]) for s in samples)
    T = max(max(len(s["response_ids"]) for s in samples), 1)
    input_ids = torch.full((B, L), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((B, L), dtype=torch.long)
    response_ids = torch.full((B, T), pad_id, dtype=torch.long)
    response_mask = torch.zeros((B, T), dtype=torch.float32)
    index = torch.zeros((B, T), dtype=torch.long)
    for i, s in enumerate(samples):
        p, r = s["prompt_ids"], s["response_ids"]
        seq = list(p) + list(r)
        input_ids[i, : len(seq)] = torch.tensor(seq)
        attention_mask[i, : len(seq)] = 1
        if r:
            response_ids[i, : len(r)] = torch.tensor(r)
            response_mask[i, : len(r)] = 1
        index[i] = (len(p) - 1 + torch.arange(T)).clamp(max=L - 1)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "response_ids": response_ids,
            "response_mask": response_mask, "index": index}


def _gather_positions(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x [B, L, ...] at positions index [B, T] -> [B, T, ...]."""
    if x.dim() == 2:
        return torch.gather(x, 1, index)
    return torch.gather(x, 1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def _slice(batch: dict[str, torch.Tensor], rows) -> dict[str, torch.Tensor]:
    return {k: v[rows] for k, v in batch.items()}


class Learner:
    """One rank. Plain class; the Ray actor is `ray.remote(Learner)` placed by rlvr.actors.group.LearnerGroup."""

    def __init__(self, cfg: dict[str, Any], rank: int, world_size: int, master_addr: str | None = None,
                 master_port: int | None = None):
        """Cheap: parses the config and picks the device. The group forms in `join`, the models load in `build`
        (both run here when `master_addr`/`master_port` are given: the no-Ray, world-size-1 use)."""
        from core.device import detect_device, set_threads

        self.cfg = cfg = RLVRConfig.model_validate(cfg)
        self.rank, self.world_size = rank, world_size
        self.device = detect_device(cfg.engine.device, cfg.engine.num_threads)
        set_threads(self.device.num_threads)
        self.torch_device = torch.device("cuda", torch.cuda.current_device()) if self.device.kind == "cuda" \
            else torch.device("cpu")
        self._data: dict[str, torch.Tensor] | None = None
        self._samples: list[dict[str, Any]] = []
        if master_addr is not None and master_port is not None:
            self.join(master_addr, master_port)
            self.build()

    def info(self) -> dict[str, Any]:
        """Who and where this rank is (pid, node address and id, the GPUs Ray gave it)."""
        from rlvr.actors.group import whereami

        return {**whereami(), "rank": self.rank, "device": self.device.kind}

    def rendezvous_address(self) -> tuple[str, int]:
        """This node's address (as Ray knows it) and a TCP port free on it right now: where rank 0 hosts a
        group's TCPStore (the learners' group, the weight-sync group)."""
        from core.engine import free_port
        from rlvr.actors.group import whereami

        return whereami()["node_ip"], free_port("")

    def join(self, master_addr: str, master_port: int, rendezvous_timeout_s: float | None = None,
             timeout_s: float | None = None) -> None:
        """Form the learners' torch.distributed group at rank 0's `master_addr:master_port`; a rank that cannot
        reach it within `rendezvous_timeout_s` raises (core.engine.RendezvousError)."""
        from core.engine import init_distributed
        from rlvr.actors.group import whereami

        node_ip = whereami()["node_ip"]
        init_distributed(self.rank, self.world_size, master_addr=master_addr, master_port=master_port,
                         device=self.device, local_rank=0 if self.device.kind == "cuda" else None,
                         rendezvous_timeout_s=rendezvous_timeout_s, timeout_s=timeout_s, node_ip=node_ip)

    def build(self) -> dict[str, Any]:
        """Load the policy, reference and critic into DeepSpeed engines (collective under ZeRO-3)."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from core.engine import build_engine

        cfg, world_size = self.cfg, self.world_size
        torch.manual_seed(cfg.seed)  # a fresh value head: identical on every rank and every run
        tok = AutoTokenizer.from_pretrained(cfg.tokenizer or cfg.model)
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        total = cfg.train.total_steps * cfg.optimizer_steps_per_rl_step

        def load_lm():
            return AutoModelForCausalLM.from_pretrained(cfg.model, dtype=torch.float32)

        self.policy = build_engine(load_lm(), cfg.learner_optim("policy"), cfg.engine, total_steps=total,
                                   world_size=world_size, device=self.device)
        self.ref = None
        if cfg.ppo.kl_coef > 0:
            self.ref = build_engine(load_lm(), cfg.optim, cfg.engine, total_steps=total, world_size=world_size,
                                    device=self.device, trainable=False)
        self.value = None
        if cfg.use_critic:
            self.value = build_engine(load_value_model(cfg), cfg.learner_optim("value"), cfg.engine,
                                      total_steps=total, world_size=world_size, device=self.device)
        log.info("learner rank %d/%d ready (pid %d)", self.rank, world_size, os.getpid())
        return self.info()

    def read_text(self, path: str) -> str | None:
        """The file's text as this rank's node sees it (None when absent): the shared-folder check."""
        try:
            with open(path) as f:
                return f.read()
        except FileNotFoundError:
            return None

    def list_files(self, path: str) -> list[tuple[str, int]]:
        """(relative path, size) of every file under `path` as this rank's node sees it (checkpoint sealing)."""
        root = os.path.abspath(path)
        out = []
        for folder, _, names in os.walk(root):
            for name in names:
                full = os.path.join(folder, name)
                out.append((os.path.relpath(full, root), os.path.getsize(full)))
        return sorted(out)

    # ---- forward passes ----
    @staticmethod
    def _response_logits(engine, batch) -> torch.Tensor:
        """Logits at the positions that predict response tokens [B, T, V]. Only the sequence tail from the
        earliest response position is projected onto the vocabulary (`logits_to_keep`): with a 49k vocabulary
        the full [B, L, V] logits would dominate memory."""
        L = batch["input_ids"].shape[1]
        first = int(batch["index"][:, 0].min())
        keep = L - first
        out = engine(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], logits_to_keep=keep)
        return _gather_positions(out.logits, batch["index"] - first)

    def _autocast(self):
        """bf16 matmuls on a CPU that has them (engine.cpu_autocast); fp32 weights and log-softmax either way."""
        from core.device import autocast_context

        return autocast_context(self.cfg.engine.cpu_autocast, self.device)

    def _logprobs(self, engine, batch, *, with_entropy: bool = False):
        with self._autocast():
            logits = self._response_logits(engine, batch)
        logits = logits.float() / self.cfg.rollout.temperature
        lp = logprobs_from_logits(logits, batch["response_ids"])
        ent = entropy_from_logits(logits.detach()) if with_entropy else None
        return lp, ent

    def _values(self, batch):
        with self._autocast():
            values = self.value(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        return _gather_positions(values.float(), batch["index"])

    def _micro_batches(self, n: int, role: str = "policy"):
        mb = self.cfg.learner_optim(role).per_device_batch_size
        return [list(range(i, min(i + mb, n))) for i in range(0, n, mb)]

    @torch.no_grad()
    def sequence_logprobs(self, prompt_ids: list[int], response_ids: list[int]) -> list[float]:
        """Raw (temperature 1) log-probs of `response_ids` after `prompt_ids` under the current policy: the
        reference side of the weight-sync check (fp32, like the generators, whatever engine.cpu_autocast says)."""
        batch = self._to_device(build_batch([{"prompt_ids": prompt_ids, "response_ids": response_ids}], self.pad_id))
        logits = self._response_logits(self.policy, batch).float()
        return logprobs_from_logits(logits, batch["response_ids"])[0, : len(response_ids)].tolist()

    def _to_device(self, batch):
        return {k: v.to(self.torch_device) for k, v in batch.items()}

    # ---- step part 1 ----
    @torch.no_grad()
    def prepare(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        """Old/reference log-probs and values for this rank's samples (kept for `update`).
        Returns per-sample sequence KL (sum over tokens) and the learner-vs-generator log-prob gap."""
        self._samples = samples
        batch = self._to_device(build_batch(samples, self.pad_id))
        n = len(samples)
        old_lp, ref_lp, values = [], [], []
        self.policy.train(False)
        for rows in self._micro_batches(n):
            mb = _slice(batch, rows)
            old_lp.append(self._logprobs(self.policy, mb)[0])
            if self.ref is not None:
                ref_lp.append(self._logprobs(self.ref, mb)[0])
            if self.value is not None:
                self.value.train(False)
                values.append(self._values(mb))
        batch["old_logprobs"] = torch.cat(old_lp)
        batch["ref_logprobs"] = torch.cat(ref_lp) if ref_lp else batch["old_logprobs"].clone()
        if values:
            batch["old_values"] = torch.cat(values)
        mask = batch["response_mask"]
        kl = kl_estimate(batch["old_logprobs"], batch["ref_logprobs"], self.cfg.kl_estimator) * mask
        batch["kl"] = kl
        self._data = batch
        # diagnostic: generator logprobs (raw) vs learner's, meaningful at temperature 1
        gap = []
        for i, s in enumerate(samples):
            m = len(s["response_ids"])
            if m and s.get("logprobs") is not None:
                g = torch.tensor(s["logprobs"], dtype=torch.float32, device=self.torch_device)
                gap.append((g - batch["old_logprobs"][i, :m]).abs().mean().item())
        return {"seq_kl": kl.sum(1).tolist(), "logprob_gap": gap}

    # ---- step part 2 ----
    def _all_reduce(self, values: list[float]) -> list[float]:
        import torch.distributed as dist

        t = torch.tensor(values, dtype=torch.float64, device=self.torch_device)
        if self.world_size > 1:
            dist.all_reduce(t)
        return t.tolist()

    def _ppo_advantages(self, scores: torch.Tensor, finished: torch.Tensor):
        cfg, d = self.cfg, self._data
        mask = d["response_mask"]
        kl = d["kl"] if cfg.kl_in_reward else torch.zeros_like(d["kl"])
        rewards, metrics = shape_token_rewards(scores, finished, kl, mask, verified_reward=cfg.rewards.verified_reward,
                                               no_eos_penalty=cfg.rewards.no_eos_penalty, kl_coef=cfg.ppo.kl_coef)
        adv, returns = compute_gae(rewards, d["old_values"], mask, gamma=cfg.ppo.gamma, lam=cfg.ppo.lam)
        if cfg.ppo.whiten_advantages:  # statistics over every rank's tokens
            s, s2, n = self._all_reduce([(adv * mask).sum().item(), (adv**2 * mask).sum().item(), mask.sum().item()])
            mean = s / max(n, 1)
            var = max(s2 / max(n, 1) - mean**2, 0.0)
            adv = (adv - mean) / (var + 1e-8) ** 0.5 * mask
        return adv, returns, metrics

    def update(self, step: int, scores: list[float], finished: list[bool],
               advantages: list[float] | None = None) -> dict[str, float]:
        """PPO/GRPO update on the prepared samples. `advantages` (per sample) for GRPO/RLOO; None for PPO."""
        cfg, d = self.cfg, self._data
        if d is None:
            raise RuntimeError("update() before prepare()")
        dev = self.torch_device
        mask = d["response_mask"]
        metrics: dict[str, float] = {}
        if cfg.use_critic:
            adv, returns, m = self._ppo_advantages(torch.tensor(scores, dtype=torch.float32, device=dev),
                                                   torch.tensor(finished, dtype=torch.bool, device=dev))
            metrics.update(m)
            d["returns"] = returns
        else:
            if advantages is None or len(advantages) != mask.shape[0]:
                raise ValueError(f"{cfg.algorithm} needs one advantage per sample on rank {self.rank}")
            adv = torch.tensor(advantages, dtype=torch.float32, device=dev)[:, None] * mask
        d["advantages"] = adv

        n = mask.shape[0]
        num_mb = cfg.ppo.num_mini_batches
        mb_size = n // num_mb
        sums: dict[str, float] = {}
        counts = 0
        for epoch in range(cfg.ppo.epochs):
            # a stateless, seeded shuffle: the same on resume, independent of any global RNG
            order = list(range(n))
            random.Random(f"minibatch/{cfg.seed}/{step}/{epoch}/{self.rank}").shuffle(order)
            for k in range(num_mb):
                rows = order[k * mb_size:(k + 1) * mb_size]
                stats = self._train_mini_batch(_slice(d, rows))
                for key, v in stats.items():
                    sums[key] = sums.get(key, 0.0) + v
                counts += 1
        metrics.update({k: v / counts for k, v in sums.items()})
        metrics["lr"] = self.policy.get_lr()[0]
        if self.value is not None:
            metrics["value/lr"] = self.value.get_lr()[0]
        metrics["advantages/mean"] = masked_mean(adv, mask).item()
        metrics["kl/token_mean"] = masked_mean(d["kl"], mask).item()
        engines = [e for e in (self.policy, self.value) if e is not None]
        metrics["nonfinite/weights"] = float(sum(count_nonfinite(e.module) for e in engines))  # checked by the driver
        return metrics

    def _train_mini_batch(self, mb: dict[str, torch.Tensor]) -> dict[str, float]:
        cfg = self.cfg
        # tokens in this mini-batch over all ranks, divided by world size: DeepSpeed averages grads over ranks
        global_tokens = self._all_reduce([mb["response_mask"].sum().item()])[0]
        denom = max(global_tokens, 1.0) / self.world_size
        stats: dict[str, float] = {}
        policy_loss = 0.0
        ent_sum = 0.0
        extra: dict[str, float] = {}
        self.policy.train()
        n_micro = 0
        norm = None
        skip, skipped = cfg.on_nonfinite == "skip", 0  # skipped optimiser steps (core.finite)
        for rows in self._micro_batches(mb["input_ids"].shape[0]):
            micro = _slice(mb, rows)
            m = micro["response_mask"]
            lp, ent = self._logprobs(self.policy, micro, with_entropy=True)
            loss, pm = ppo_policy_loss(lp, micro["old_logprobs"], micro["advantages"], m, clip_eps=cfg.ppo.clip_eps,
                                       clip_eps_high=cfg.ppo.clip_eps_high, num_tokens=denom,
                                       log_ratio_clip=cfg.ppo.log_ratio_clip)
            if not cfg.kl_in_reward and self.ref is not None and cfg.ppo.kl_coef > 0:
                kl = kl_estimate(lp, micro["ref_logprobs"], cfg.kl_estimator)
                loss = loss + cfg.ppo.kl_coef * aggregate_loss(kl, m, num_tokens=denom)
            self.policy.backward(loss, scale_wrt_gas=False)
            norm = _pre_step_grad_norm(self.policy, norm)
            skipped += not step_engine(self.policy, skip_nonfinite=skip)
            policy_loss += loss.item()
            ent_sum += (ent * m).sum().item()
            w = m.sum().item()
            for key, v in pm.items():
                extra[key] = extra.get(key, 0.0) + v * w
            n_micro += 1
        stats["policy/loss"] = policy_loss
        stats["policy/grad_norm"] = _grad_norm(self.policy, norm)
        stats["policy/skipped_fraction"] = float(skipped > 0)
        tokens_here = mb["response_mask"].sum().item()
        stats["policy/entropy"] = ent_sum / max(tokens_here, 1)
        stats.update({k: v / max(tokens_here, 1) for k, v in extra.items()})

        if self.value is not None:
            self.value.train()
            v_loss = 0.0
            vextra: dict[str, float] = {}
            vnorm, vskipped = None, 0
            for rows in self._micro_batches(mb["input_ids"].shape[0], "value"):
                micro = _slice(mb, rows)
                m = micro["response_mask"]
                values = self._values(micro)
                loss, vm = value_loss(values, micro["old_values"], micro["returns"], m,
                                      clip_eps=cfg.ppo.value_clip_eps, num_tokens=denom)
                self.value.backward(loss, scale_wrt_gas=False)
                vnorm = _pre_step_grad_norm(self.value, vnorm)
                vskipped += not step_engine(self.value, skip_nonfinite=skip)
                v_loss += loss.item()
                w = m.sum().item()
                for key, v in vm.items():
                    vextra[key] = vextra.get(key, 0.0) + v * w
            stats["value/loss"] = v_loss
            stats["value/grad_norm"] = _grad_norm(self.value, vnorm)
            stats["value/skipped_fraction"] = float(vskipped > 0)
            stats.update({k: v / max(tokens_here, 1) for k, v in vextra.items() if k != "value/loss"})
        return stats

    # ---- weights out ----
    def full_state_dict(self) -> dict[str, torch.Tensor] | None:
        """The policy's full weights on CPU (rank 0; None elsewhere). Under ZeRO-3 every rank must call this:
        the parameters are gathered collectively first."""
        module = self.policy.module
        if self.cfg.engine.zero_stage == 3:
            import deepspeed

            with deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None):
                sd = {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()} \
                    if self.rank == 0 else None
            return sd
        if self.rank != 0:
            return None
        return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in module.state_dict().items()}

    def join_weight_sync(self, group_args: dict[str, Any]) -> None:
        """Collective transport: rank 0 hosts and joins the weight-sync group (rank 0 of it); other ranks do
        not take part."""
        from rlvr.weight_sync import join_group

        if self.rank == 0:
            join_group(device=str(self.torch_device), rank=0, **group_args)

    def broadcast_weights(self, group_args: dict[str, Any]) -> int:
        """Collective transport: rank 0 broadcasts each tensor to the generators (rlvr.weight_sync)."""
        from rlvr.weight_sync import send_broadcast

        sd = self.full_state_dict()
        if self.rank != 0:
            return 0
        return send_broadcast(sd, device=str(self.torch_device), **group_args)

    def weight_spec(self) -> list[tuple[str, str, list[int]]]:
        """(name, dtype, full shape) of every tensor `full_state_dict` returns, in order (ZeRO-3 partitions
        parameters: their full shape is `ds_shape`)."""
        spec = []
        for k, v in self.policy.module.state_dict(keep_vars=True).items():  # Parameters keep `ds_shape`
            shape = getattr(v, "ds_shape", None) or v.shape
            spec.append((k, str(v.dtype).removeprefix("torch."), [int(x) for x in shape]))
        return spec

    # ---- checkpoints ----
    def save(self, path: str, step: int, write_hf: bool = True) -> None:
        """Every rank: DeepSpeed state (weights, optimiser, scheduler) of the trainable engines; rank 0 also
        the HF-format policy in `path/hf` and the value head."""
        self.policy.save_checkpoint(os.path.join(path, "policy"), tag="ds", client_state={"step": step})
        if self.value is not None:
            self.value.save_checkpoint(os.path.join(path, "value"), tag="ds", client_state={"step": step})
        if write_hf:
            self.save_hf(os.path.join(path, "hf"))

    def save_hf(self, out: str) -> None:
        sd = self.full_state_dict()
        if self.rank != 0:
            return
        from transformers import AutoTokenizer

        self.policy.module.save_pretrained(out, state_dict=sd, safe_serialization=True)
        AutoTokenizer.from_pretrained(self.cfg.tokenizer or self.cfg.model).save_pretrained(out)

    def load(self, path: str) -> int:
        from core.checkpoint import safe_deepspeed_load

        with safe_deepspeed_load():  # every torch.load weights_only=True: a pickle payload never runs
            _, client = self.policy.load_checkpoint(os.path.join(path, "policy"), tag="ds")
            if self.value is not None:
                self.value.load_checkpoint(os.path.join(path, "value"), tag="ds")
        return int(client["step"])

    def barrier(self) -> None:
        import torch.distributed as dist

        if self.world_size > 1:
            dist.barrier()


def _pre_step_grad_norm(engine, previous: float | None) -> float | None:
    """Without ZeRO, DeepSpeed clips fp32 gradients but does not keep the norm: compute it at the accumulation
    boundary (gradients already averaged over ranks), before the optimiser step. ZeRO engines report their own."""
    if engine.zero_optimization() or not engine.is_gradient_accumulation_boundary():
        return previous
    grads = [p.grad for p in engine.module.parameters() if p.grad is not None]
    if not grads:
        return previous
    return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads])))


def _grad_norm(engine, computed: float | None) -> float:
    norm = engine.get_global_grad_norm()
    if norm is None:
        return float("nan") if computed is None else computed
    return float(norm.item() if hasattr(norm, "item") else norm)
