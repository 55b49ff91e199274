"""One learner rank: the policy (trainable), the critic (trainable, PPO only) and the frozen reference policy,
each a DeepSpeed engine (core.engine), all ranks in one torch.distributed group.

Roles are colocated on every rank (as OpenRLHF's `--colocate_all_models`): the three models share the rank's
process and device, so a step needs no tensor traffic between role actors, and the data-parallel group is the
same for all three. On a small model that is the cheapest layout; a separate reference/critic placement would be a
change to this file only.

A step, as the driver (rlvr.trainer) calls it:
    prepare(samples)                  no-grad pass: per-token log-probs, reference log-probs and values of this
                                      rank's samples, kept here and returned to the driver, which computes the
                                      advantages of the whole batch (rlvr.algorithms.compute_advantages)
    update(step, advantages, returns) epochs x mini-batches of clipped policy (and value) updates; the losses come
                                      from the registries the config names (ppo.policy_loss, ppo.value_loss)
Loss normalisation (core.losses): every micro-batch loss is sum(per-token) / (global tokens of its mini-batch /
world size), backward without DeepSpeed's 1/accumulation scaling; DeepSpeed's gradient averaging over ranks
completes the mean, so the gradient is the same however the batch is sharded or accumulated.

Temperature: log-probs are always computed from logits / rollout.temperature (old, new and reference), the
distribution the samples were drawn from.

A plain class: `Learner(cfg, 0, 1, master_addr, port)` joins a one-rank gloo group and builds its engines without
Ray (tests/rlvr/test_learner.py); rlvr.actors.group wraps it as a Ray actor, one per rank.
"""

from __future__ import annotations

import os
import random
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from core.checkpoint import safe_deepspeed_load
from core.device import autocast_context, detect_device, set_threads
from core.engine import all_reduce_sum, barrier, build_engine, free_port, init_distributed
from core.finite import count_nonfinite
from core.logging import get_logger
from core.losses import aggregate_loss, per_rank_units, train_micro_batches
from rlvr.actors.node import whereami
from rlvr.actors.weight_transport import join_group, send_broadcast
from rlvr.algorithms import (
    POLICY_LOSSES,
    VALUE_LOSSES,
    entropy_from_logits,
    kl_estimate,
    logprobs_from_logits,
)
from rlvr.config import RLVRConfig
from sft_dpo.reward_model import load_value_model as load_rm_value

log = get_logger(__name__)


def load_value_model(cfg: RLVRConfig) -> torch.nn.Module:
    """The critic, input_ids -> per-token values [B, L]: `sft_dpo.reward_model.load_value_model` on the reward
    model folder (`value_model`: Tulu 3 / SmolTulu initialise the critic from the RM), or on the policy folder when
    none is given (then the scalar head starts fresh, drawn from the seeded torch RNG)."""
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
        self.cfg = cfg = RLVRConfig.model_validate(cfg)
        self.rank, self.world_size = rank, world_size
        self.device = detect_device(cfg.engine.device, cfg.engine.num_threads)
        set_threads(self.device.num_threads)
        self.torch_device = torch.device("cuda", torch.cuda.current_device()) if self.device.kind == "cuda" \
            else torch.device("cpu")
        self._data: dict[str, torch.Tensor] | None = None
        if master_addr is not None and master_port is not None:
            self.join(master_addr, master_port)
            self.build()

    def info(self) -> dict[str, Any]:
        """Who and where this rank is (pid, node address and id, the GPUs Ray gave it)."""
        return {**whereami(), "rank": self.rank, "device": self.device.kind}

    def rendezvous_address(self) -> tuple[str, int]:
        """This node's address (as Ray knows it) and a TCP port free on it right now: where rank 0 hosts a
        group's TCPStore (the learners' group, the weight-sync group)."""
        return whereami()["node_ip"], free_port("")

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
        """The no-grad pass over this rank's samples: per-token log-probs (old policy), reference log-probs and
        values, kept here for `update` and returned for the driver's compute_advantages (rlvr.algorithms).

        Returns logprobs, ref_logprobs, mask and values (None without a critic), each [b, T] on CPU, 0 on padding
        (T: this rank's longest response), and the learner-vs-generator log-prob gap per sample (a diagnostic)."""
        batch = self._to_device(build_batch(samples, self.pad_id))
        old_lp, ref_lp, values = [], [], []
        self.policy.train(False)
        if self.value is not None:
            self.value.train(False)
        for rows in self._micro_batches(len(samples)):
            mb = _slice(batch, rows)
            old_lp.append(self._logprobs(self.policy, mb)[0])
            if self.ref is not None:
                ref_lp.append(self._logprobs(self.ref, mb)[0])
            if self.value is not None:
                values.append(self._values(mb))
        batch["old_logprobs"] = torch.cat(old_lp)
        batch["ref_logprobs"] = torch.cat(ref_lp) if ref_lp else batch["old_logprobs"].clone()  # kl_coef 0: KL 0
        if values:
            batch["old_values"] = torch.cat(values)
        self._data = batch
        gap = []  # generator log-probs (raw) vs the learner's: meaningful at temperature 1
        for i, s in enumerate(samples):
            m = len(s["response_ids"])
            if m and s.get("logprobs") is not None:
                g = torch.tensor(s["logprobs"], dtype=torch.float32, device=self.torch_device)
                gap.append((g - batch["old_logprobs"][i, :m]).abs().mean().item())
        mask = batch["response_mask"]
        return {"logprobs": (batch["old_logprobs"] * mask).cpu(), "ref_logprobs": (batch["ref_logprobs"] * mask).cpu(),
                "mask": mask.cpu(), "values": (batch["old_values"] * mask).cpu() if values else None,
                "logprob_gap": gap}

    # ---- step part 2 ----
    def update(self, step: int, advantages: torch.Tensor, returns: torch.Tensor | None = None) -> dict[str, float]:
        """PPO-style update on the prepared samples: `advantages` [b, T] from compute_advantages (the rows and
        width `prepare` returned), `returns` [b, T] for the critic (PPO). Then epochs x mini-batches of clipped
        policy (and value) updates."""
        cfg, d = self.cfg, self._data
        if d is None:
            raise RuntimeError("update() before prepare()")
        mask = d["response_mask"]
        if tuple(advantages.shape) != tuple(mask.shape):
            raise ValueError(f"learner rank {self.rank}: advantages of shape {tuple(advantages.shape)} for a prepared "
                             f"batch of shape {tuple(mask.shape)}")
        d["advantages"] = advantages.to(self.torch_device, torch.float32) * mask
        if self.value is not None:
            if returns is None:
                raise ValueError(f"learner rank {self.rank}: the critic needs returns (algorithm ppo)")
            d["returns"] = returns.to(self.torch_device, torch.float32)

        n = mask.shape[0]
        mb_size = n // cfg.ppo.num_mini_batches
        sums: dict[str, float] = {}
        counts = 0
        for epoch in range(cfg.ppo.epochs):
            # a stateless, seeded shuffle: the same on resume, independent of any global RNG
            order = list(range(n))
            random.Random(f"minibatch/{cfg.seed}/{step}/{epoch}/{self.rank}").shuffle(order)
            for k in range(cfg.ppo.num_mini_batches):
                stats = self._train_mini_batch(_slice(d, order[k * mb_size:(k + 1) * mb_size]))
                for key, v in stats.items():
                    sums[key] = sums.get(key, 0.0) + v
                counts += 1
        metrics = {k: v / counts for k, v in sums.items()}
        metrics["lr"] = self.policy.get_lr()[0]
        if self.value is not None:
            metrics["value/lr"] = self.value.get_lr()[0]
        engines = [e for e in (self.policy, self.value) if e is not None]
        metrics["nonfinite/weights"] = float(sum(count_nonfinite(e.module) for e in engines))  # checked by the driver
        return metrics

    def _train_mini_batch(self, mb: dict[str, torch.Tensor]) -> dict[str, float]:
        """One optimiser step of the policy (and of the critic) on a mini-batch. Losses are normalised by the
        mini-batch's token count over all ranks (core.losses)."""
        cfg = self.cfg
        global_tokens = all_reduce_sum(torch.tensor([mb["response_mask"].sum().item()], dtype=torch.float64,
                                                    device=self.torch_device)).item()
        num_tokens = per_rank_units(global_tokens, self.world_size)
        policy_loss = POLICY_LOSSES[cfg.ppo.policy_loss]
        kl_in_loss = not cfg.kl_in_reward and self.ref is not None and cfg.ppo.kl_coef > 0

        def policy_step(micro):
            m = micro["response_mask"]
            lp, ent = self._logprobs(self.policy, micro, with_entropy=True)
            loss, pm = policy_loss(lp, micro["old_logprobs"], micro["advantages"], m, clip_eps=cfg.ppo.clip_eps,
                                   clip_eps_high=cfg.ppo.clip_eps_high, num_tokens=num_tokens,
                                   log_ratio_clip=cfg.ppo.log_ratio_clip)
            if kl_in_loss:
                kl = kl_estimate(lp, micro["ref_logprobs"], cfg.kl_estimator)
                loss = loss + cfg.ppo.kl_coef * aggregate_loss(kl, m, num_units=num_tokens)
            w = m.sum().item()  # token-weighted sums of the per-micro-batch means
            return loss, {"policy/entropy": (ent * m).sum().item(), **{k: v * w for k, v in pm.items()}}

        stats = self._fit(self.policy, "policy", mb, policy_step)
        if self.value is not None:
            value_loss = VALUE_LOSSES[cfg.ppo.value_loss]

            def value_step(micro):
                m = micro["response_mask"]
                loss, vm = value_loss(self._values(micro), micro["old_values"], micro["returns"], m,
                                      clip_eps=cfg.ppo.value_clip_eps, num_tokens=num_tokens)
                w = m.sum().item()
                return loss, {k: v * w for k, v in vm.items() if k != "value/loss"}

            stats.update(self._fit(self.value, "value", mb, value_step))
        return stats

    def _fit(self, engine, role: str, mb: dict[str, torch.Tensor], loss_fn) -> dict[str, float]:
        """The micro-batch loop of one engine (core.losses.train_micro_batches): `<role>/loss`, grad norm, skipped
        steps, and loss_fn's token-weighted statistics as per-token means over the mini-batch on this rank."""
        engine.train()
        micro = (_slice(mb, rows) for rows in self._micro_batches(mb["input_ids"].shape[0], role))
        out = train_micro_batches(engine, micro, loss_fn, skip_nonfinite=self.cfg.on_nonfinite == "skip")
        tokens = max(mb["response_mask"].sum().item(), 1)
        return {f"{role}/loss": out.loss,
                f"{role}/grad_norm": float("nan") if out.grad_norm is None else out.grad_norm,
                f"{role}/skipped_fraction": float(out.skipped), **{k: v / tokens for k, v in out.stats.items()}}

    # ---- weights out ----
    def full_state_dict(self) -> dict[str, torch.Tensor] | None:
        """The policy's full weights on CPU (rank 0; None elsewhere). Under ZeRO-3 every rank must call this:
        the parameters are gathered collectively first."""
        module = self.policy.module
        if self.cfg.engine.zero_stage == 3:
            import deepspeed  # lazy: only under ZeRO-3; the driver imports this module to wrap it in Ray

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
        self.policy.module.save_pretrained(out, state_dict=sd, safe_serialization=True)
        AutoTokenizer.from_pretrained(self.cfg.tokenizer or self.cfg.model).save_pretrained(out)

    def load(self, path: str) -> int:
        with safe_deepspeed_load():  # every torch.load weights_only=True: a pickle payload never runs
            _, client = self.policy.load_checkpoint(os.path.join(path, "policy"), tag="ds")
            if self.value is not None:
                self.value.load_checkpoint(os.path.join(path, "value"), tag="ds")
        return int(client["step"])

    def barrier(self) -> None:
        barrier()
