"""The RLVR loop, in reading order (the Ray wiring is in rlvr.actors.group, the CLI/Ray start-up in rlvr.driver).
One step (`train_step`) follows a prompt through four modules:

    sample prompts (seeded, resumable cursor; tokenised once, when loaded: rlvr.data.prompts)
    -> generate            rlvr.actors.generator.Generator (per-request seeds; vLLM or HF)
    -> score               rewards.scoring.score_batch (a killable worker pool; error budget)
    -> prepare             rlvr.actors.learner.Learner.prepare: per-token log-probs, reference log-probs, values
    -> advantages          rlvr.algorithms.compute_advantages over the whole batch (shaping, KL, GAE or groups)
    -> update              rlvr.actors.learner.Learner.update: clipped policy/value losses -> gradient -> step
    -> weight sync (+ check)  rlvr.weight_sync.WeightSync
    -> log -> checkpoint every N -> evaluate every N

Asynchronous rollouts (rollout.async_steps k >= 1, rlvr.rollouts): the generators produce the batches of steps
t+1..t+k while the learners train on step t; k = 0 is the loop above, one phase after another.

Exact resume: every random choice is a pure function of (seed, step, ...): prompt order (PromptSampler: seed,
epoch), sampling seeds (seed, step, prompt index, sample index), mini-batch shuffles (seed, step, epoch, rank).
A checkpoint holds the learners' DeepSpeed state (weights, optimiser, LR schedule), the sampler cursor, the RNG
states, the step and the rollout batches in flight; after loading it the generators get the learner's weights
before the first rollout.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import torch
from ray.util.placement_group import remove_placement_group
from tqdm.auto import tqdm
from transformers import AutoTokenizer

from core.checkpoint import (
    CheckpointManager,
    ResumeError,
    capture_rng_state,
    check_same_lora,
    check_same_optimiser,
    load_state,
    optimiser_settings,
    out_of_space_guard,
    restore_rng_state,
    resume_point,
)
from core.config import config_to_dict, save_config
from core.finite import nonfinite_problem, stop_message
from core.logging import get_logger
from core.metrics import MetricsLogger, mean_ci95, prepare_metrics_file
from core.plots import plot_curves
from core.preflight import checkpoint_bytes, parameter_count
from core.run import TrainResult
from core.tokens import chat_ids
from rewards.bounded import BoundedPool
from rewards.scoring import check_error_budget, resolve_verifiers, score_batch, warm_up_worker
from rlvr.actors.group import (
    GeneratorGroup,
    LearnerGroup,
    cause_line,
    check_shared_folder,
    colocated_placement_group,
    confirm_checkpoint_parts,
)
from rlvr.actors.perf import peak_rss_gib
from rlvr.algorithms import KL_CONTROLLERS, compute_advantages
from rlvr.config import RLVRConfig
from rlvr.data.prompts import PromptDataError, load_prompts, with_verifiers, without_held_out
from rlvr.data.sampler import PromptSampler
from rlvr.errors import TrainingStopped
from rlvr.rollouts import Rollouts, _chunks, request_seed
from rlvr.weight_sync import PROBE_MESSAGES, WeightSync, choose_transport

log = get_logger(__name__)


def cat_padded(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Concatenate [b_i, T_i] tensors along rows, right-padding each with 0 to the widest T."""
    width = max(t.shape[1] for t in tensors)
    return torch.cat([torch.nn.functional.pad(t.float(), (0, width - t.shape[1])) for t in tensors])


class RLVRTrainer:
    def __init__(self, cfg: RLVRConfig):
        self.cfg = cfg
        self.out = Path(cfg.output_dir).resolve()  # actors on other nodes get absolute paths
        self.out.mkdir(parents=True, exist_ok=True)
        self.tokenizer = AutoTokenizer.from_pretrained(cfg.tokenizer or cfg.model)
        d = cfg.data
        self.train_set = with_verifiers(
            load_prompts(d.train, tokenizer=self.tokenizer, max_prompt_tokens=d.max_prompt_tokens,
                         max_dropped_fraction=d.max_dropped_fraction), d.train_verifiers)
        self.eval_rows = []
        if d.eval:
            eval_set = load_prompts(d.eval, tokenizer=self.tokenizer, max_prompt_tokens=d.max_prompt_tokens,
                                    max_dropped_fraction=d.max_dropped_fraction)
            self.eval_rows = list(eval_set)[: d.eval_size or None]
        if self.eval_rows:
            self.train_set, overlap = without_held_out(self.train_set, self.eval_rows)
            if overlap:
                log.info("dropped %d training prompts identical to held-out ones (%d left)", overlap,
                         len(self.train_set))
            if not len(self.train_set):
                raise PromptDataError("every training prompt is also a held-out (data.eval) prompt")
        resolve_verifiers(n for r in [*self.train_set, *self.eval_rows] for n in r.verifier_names)  # fail at start
        self.sampler = PromptSampler(self.train_set, cfg.rollout.prompts_per_step, seed=cfg.seed)
        self.pool = BoundedPool(cfg.rewards.num_workers, cfg.rewards.timeout_s, initializer=warm_up_worker,
                                memory_limit_mb=4096, max_tasks_per_worker=10_000)
        self.ckpt = CheckpointManager(self.out / "checkpoints", keep_last=cfg.checkpoints.keep_last)
        self.learners: LearnerGroup | None = None
        self.generators: GeneratorGroup | None = None
        self._placement_group = None
        self.step = 0
        self.kl_coef = cfg.ppo.kl_coef  # beta: moves between steps under ppo.kl_controller adaptive (checkpointed)

    # ---- set-up ----
    def start_actors(self) -> None:
        """Place the learner ranks and the generators, form their groups, pick the weight-sync transport. Each
        stage is bounded by resources.startup_timeout_s (loading models by call_timeout_s); actors.json records
        who runs where."""
        cfg, res, gen = self.cfg, self.cfg.resources, self.cfg.generation
        W = cfg.dist.world_size
        if res.colocate:
            self._placement_group = colocated_placement_group(
                W, {"CPU": res.learner_num_cpus, "GPU": res.learner_num_gpus}, gen.num_generators,
                {"CPU": gen.num_cpus, "GPU": gen.num_gpus}, timeout_s=res.startup_timeout_s)
        self.learners = LearnerGroup(config_to_dict(cfg), world_size=W, num_cpus=res.learner_num_cpus,
                                     num_gpus=res.learner_num_gpus, threads=cfg.engine.num_threads or 1,
                                     timeout_s=res.call_timeout_s, startup_timeout_s=res.startup_timeout_s,
                                     master_addr=cfg.dist.master_addr, master_port=cfg.dist.master_port,
                                     placement_group=self._placement_group)
        check_shared_folder(self.out, self.learners, timeout_s=res.startup_timeout_s)
        self.learners.build()
        self.generators = GeneratorGroup(cfg.model, gen, count=gen.num_generators, max_model_len=cfg.max_model_len,
                                         seed=cfg.seed, timeout_s=res.call_timeout_s,
                                         startup_timeout_s=res.startup_timeout_s,
                                         placement_group=self._placement_group, bundle_offset=W,
                                         reference_micro_batch_size=cfg.reference_micro_batch_size)
        transport = choose_transport(cfg.weight_sync.transport, self.learners.infos[0], self.generators.infos)
        actors = {"learners": self.learners.infos, "generators": self.generators.infos, "weight_sync": transport,
                  "rendezvous": f"{self.learners.master_addr}:{self.learners.master_port}"}
        (self.out / "actors.json").write_text(json.dumps(actors, indent=1))
        probe = chat_ids(self.tokenizer, PROBE_MESSAGES)
        self.sync = WeightSync(self.learners, self.generators, transport=transport,
                               timeout_s=cfg.weight_sync.timeout_s, tolerance=cfg.weight_sync.tolerance,
                               bf16_tolerance=cfg.weight_sync.bf16_tolerance, probe_prompt=probe,
                               startup_timeout_s=res.startup_timeout_s, master_addr=cfg.dist.master_addr)
        self.sync.connect()
        self.rollouts = Rollouts(cfg, self.generators, self.sampler, list(self.train_set))
        log.info("actors: %s; %s; weight sync %s", ", ".join(self.learners.names), ", ".join(self.generators.names),
                 transport)

    def stop_actors(self) -> None:
        for group in (self.generators, self.learners):
            if group is not None:
                group.kill()
        if self._placement_group is not None:
            remove_placement_group(self._placement_group)
            self._placement_group = None
        self.pool.close()

    # ---- checkpoints ----
    def data_fingerprint(self) -> str:
        """Hash of the training prompts' content in order (ids, messages, ground truths, verifiers), saved in
        each checkpoint's manifest: a resume on changed data is refused before anything starts."""
        if getattr(self, "_data_fingerprint", None) is None:
            h = hashlib.sha256()
            for row in self.train_set:
                h.update(json.dumps([row.id, row.messages, row.ground_truth, row.dataset], sort_keys=True,
                                    default=str).encode())
            self._data_fingerprint = h.hexdigest()
        return self._data_fingerprint

    def plan_resume(self) -> None:
        """Before Ray starts: pick the checkpoint to resume from (checkpoints.resume; core.checkpoint.resume_point):
        the newest usable one must have been trained on these prompts with this seed."""
        def accept(path: Path) -> dict:
            state = load_state(path / "trainer_state.pt")
            self._check_same_data(path, state)
            return state

        self._resume_from = resume_point(self.ckpt, self.cfg.checkpoints.resume, accept)
        # an earlier run's metrics.jsonl is set aside in run() (prepare_metrics_file)

    def optimiser_settings(self) -> dict:
        """The settings a resume restores from the checkpoint (core.checkpoint.check_same_optimiser)."""
        cfg = self.cfg
        return optimiser_settings(optim=cfg.optim, value_optim=cfg.learner_optim("value") if cfg.use_critic else None)

    def _check_same_data(self, path: Path, state: dict) -> None:
        saved = state.get("sampler", {})
        manifest = json.loads((path / "MANIFEST.json").read_text())
        check_same_optimiser(path, manifest.get("optimiser"), self.optimiser_settings())
        check_same_lora(path, manifest.get("lora"), self.cfg.lora.model_dump(mode="json"))
        checks = [("seed", saved.get("seed"), self.sampler.seed),
                  ("number of prompts", saved.get("num_prompts"), len(self.train_set)),
                  ("prompt ids", saved.get("fingerprint"), self.sampler.fingerprint)]
        if "data_fingerprint" in manifest:
            checks.append(("prompt content", manifest["data_fingerprint"][:16], self.data_fingerprint()[:16]))
        for what, then, now in checks:
            if then != now:
                raise ResumeError(f"{path} was trained on other data: its {what} is {then!r}, now {now!r} "
                                  "(data.train, its files or seed changed); resume with the same data, or set "
                                  "checkpoints.resume=never to start over")

    def resume(self) -> bool:
        """After the actors start: load the checkpoint `plan_resume` picked into the learners and this driver."""
        if not hasattr(self, "_resume_from"):
            self.plan_resume()
        if self._resume_from is None:
            return False
        path, state = self._resume_from
        try:
            step = self.learners.get(self.learners.call("load", str(path)), "loading checkpoint")[0]
        except Exception as err:
            raise TrainingStopped(f"{path}: the learners could not load it ({cause_line(err)})") from err
        if step != state["step"]:
            raise TrainingStopped(f"{path}: learner state is step {step} but trainer_state.pt says {state['step']}")
        self.sampler.load_state_dict(state["sampler"])
        restore_rng_state(state["rng"])
        self.step = state["step"]
        self.kl_coef = float(state.get("kl_coef", self.cfg.ppo.kl_coef))
        self.rollouts.load_state_dict(state.get("inflight", []))
        self.rollouts.policy_step = self.step
        log.info("resumed from %s (step %d)", path, self.step)
        return True

    def save(self) -> Path:
        """One checkpoint of the current step; an out-of-space failure says where and how much is needed."""
        path = self.ckpt.begin(self.step)

        def needed() -> int | None:
            params = parameter_count(Path(self.cfg.model))
            return checkpoint_bytes(params, critic_params=params if self.cfg.use_critic else None)

        with out_of_space_guard(path, self.ckpt.root, needed):
            self.learners.get(self.learners.call("save", str(path), self.step), "saving checkpoint")
            confirm_checkpoint_parts(path, self.learners, timeout_s=self.cfg.resources.startup_timeout_s)
            torch.save({"step": self.step, "sampler": self.sampler.state_dict(), "rng": capture_rng_state(),
                        "inflight": self.rollouts.state_dict(), "kl_coef": self.kl_coef}, path / "trainer_state.pt")
            save_config(self.cfg, path / "config.yaml")
            return self.ckpt.commit(self.step, extra={"data_fingerprint": self.data_fingerprint(),
                                                      "optimiser": self.optimiser_settings(),
                                                      "lora": self.cfg.lora.model_dump(mode="json")})

    def _check_update(self, step: int, results: list[dict[str, Any]]) -> None:
        """Never go on from (or save) non-finite state: a NaN/inf loss or grad norm (unless on_nonfinite=skip
        skipped those optimiser steps) or weight stops the run here, before anything is saved."""
        skip = self.cfg.on_nonfinite == "skip"
        for rank, r in enumerate(results):
            problem = nonfinite_problem(r, r.get("nonfinite/weights", 0.0), skip=skip)
            if problem is not None:
                raise TrainingStopped(stop_message(f"step {step}", problem, self.ckpt.latest(), skip=skip,
                                                   on=f"learner rank {rank}"))

    # ---- one RL step ----
    def generate(self, rows, *, step: int, samples: int, temperature: float, kind: str) -> list[dict[str, Any]]:
        """Generate and wait (evaluation; the weight sync's probe is rlvr.weight_sync)."""
        batch = self.rollouts.submit(rows, step=step, samples=samples, temperature=temperature, kind=kind)
        return self.rollouts.collect(batch).reqs

    def score(self, reqs: list[dict[str, Any]], *, enforce_budget: bool = True):
        texts = self.tokenizer.batch_decode([r["response_ids"] for r in reqs], skip_special_tokens=True)
        rows = [r["row"] for r in reqs]
        prompts = [next((m["content"] for m in reversed(row.messages) if m["role"] == "user"), None) for row in rows]
        batch = score_batch(texts, [row.ground_truth for row in rows], [row.dataset for row in rows],
                            prompts=prompts, pool=self.pool, timeout_s=self.cfg.rewards.timeout_s)
        if enforce_budget:
            try:
                check_error_budget(batch, self.cfg.rewards.max_error_fraction)
            except RuntimeError as err:
                raise TrainingStopped(f"step {self.step + 1}: {err} (rewards.max_error_fraction)") from err
        return batch

    def train_step(self) -> dict[str, Any]:
        """One RL step: prompts -> responses -> scores -> log-probs, reference log-probs and values (learners) ->
        advantages (here, over the whole batch) -> policy/critic update (learners) -> weight sync. Asynchronous
        (rollout.async_steps > 0): the step's batch was submitted earlier, and the next ones are submitted before
        the learners start (rlvr.rollouts)."""
        cfg, step = self.cfg, self.step + 1
        t0 = time.perf_counter()
        gen_batch, t_gen = self.rollouts.next_batch(step)

        t1 = time.perf_counter()
        scores = self.score(gen_batch.reqs)
        values, sampling_metrics = scores.values, {}
        if cfg.rollout.dynamic_sampling:  # more rounds until the batch holds prompts_per_step informative groups
            gen_batch, values, scores, sampling_metrics = self.rollouts.dynamic_batch(gen_batch, scores, self.score)
            sampling_metrics["reward/trained_mean"] = sum(values) / len(values)
        rows, reqs = gen_batch.rows, gen_batch.reqs
        t_score = time.perf_counter() - t1

        t2 = time.perf_counter()
        W = cfg.dist.world_size
        samples = [{"prompt_ids": r["prompt_ids"], "response_ids": r["response_ids"], "logprobs": r["logprobs"],
                    "ref_logprobs": r.get("ref_logprobs")} for r in reqs]
        prepared = self.learners.get(self.learners.call_sharded("prepare", [(s,) for s in _chunks(samples, W)]),
                                     "learner prepare")
        batch = {key: None if prepared[0][key] is None else cat_padded([p[key] for p in prepared])
                 for key in ("mask", "logprobs", "ref_logprobs", *(("values",) if cfg.use_critic else ()))}
        batch["scores"] = torch.tensor(values, dtype=torch.float32)
        batch["finished"] = torch.tensor([r["finished"] for r in reqs])
        params = dataclasses.replace(cfg.advantage_params(), kl_coef=self.kl_coef)
        advantages, returns, adv_metrics = compute_advantages(cfg.advantage_estimator, batch, params)
        keep = batch["finished"].float() if cfg.rewards.overlong_filter else None  # cut-off samples leave the loss
        updates, start = [], 0
        for p in prepared:  # each rank gets its own rows, at the width it prepared them
            rows_, width = p["mask"].shape
            end = start + rows_
            updates.append((step, advantages[start:end, :width],
                            None if returns is None else returns[start:end, :width],
                            None if keep is None else keep[start:end], self.kl_coef))
            start = end
        results = self.learners.get(self.learners.call_sharded("update", updates), "learner update")
        self._check_update(step, results)  # before the weights reach the generators or a checkpoint
        t_learn = time.perf_counter() - t2

        # asynchronous: the generators reload while the learners start the next step (rlvr.weight_sync)
        sync_metrics = self.sync.sync(wait=not cfg.rollout.async_steps)
        self.rollouts.policy_step = step
        if cfg.weight_sync.verify and self.sync.version % cfg.weight_sync.verify_every == 0:
            sync_metrics["weight_sync/max_logprob_diff"] = self.sync.verify()
        self.step = step

        metrics: dict[str, Any] = {k: sum(r[k] for r in results) / W for k in results[0]
                                   if not k.startswith(("sum/", "max/"))}
        metrics.update(scores.metrics("reward"))  # with dynamic sampling: of every sample generated this step
        metrics.update(sampling_metrics)
        metrics.update(adv_metrics)
        metrics.update(_learner_sums(results, batch["mask"]))
        metrics["kl/coef"] = self.kl_coef
        if keep is not None:
            metrics["reward/overlong_filtered_fraction"] = 1.0 - keep.mean().item()
        if "kl/sequence_mean" in metrics:  # the next step's beta (ppo.kl_controller)
            self.kl_coef = KL_CONTROLLERS[cfg.ppo.kl_controller](
                self.kl_coef, metrics["kl/sequence_mean"], target=cfg.ppo.kl_target, horizon=cfg.ppo.kl_horizon,
                n_steps=len(reqs))
        resp_tokens = sum(len(r["response_ids"]) for r in reqs)
        all_tokens = resp_tokens + sum(len(r["prompt_ids"]) for r in reqs)
        metrics.update({
            "response/length_mean": resp_tokens / len(reqs),
            "response/finished_fraction": sum(r["finished"] for r in reqs) / len(reqs),
            "rollout/staleness": float(step - 1 - gen_batch.policy_step),
            "time/generation_s": t_gen, "time/scoring_s": t_score, "time/learner_s": t_learn,
            "time/step_s": time.perf_counter() - t0,
            "tokens_per_s/learner": all_tokens / max(t_learn, 1e-9),
            "tokens_per_s/end_to_end": resp_tokens / max(time.perf_counter() - t0, 1e-9),
            "memory/driver_peak_rss_gib": peak_rss_gib(),
            "prompt_ids": [r.id for r in rows],
            **sync_metrics,
        })
        if not cfg.rollout.async_steps:  # asynchronous: t_gen is only the wait, not the generation time
            metrics["tokens_per_s/generation"] = resp_tokens / max(t_gen, 1e-9)
        if step == cfg.train.total_steps:  # peak memory only grows: the last step's is the run's
            rss = self.generators.get(self.generators.call("peak_rss_gib"), "generator memory")
            metrics["memory/generator_peak_rss_gib"] = max(rss)
        return metrics

    # ---- evaluation ----
    def evaluate(self) -> dict[str, float]:
        if not self.eval_rows:
            return {}
        t0 = time.perf_counter()
        reqs = self.generate(self.eval_rows, step=0, samples=1, temperature=self.cfg.rollout.eval_temperature,
                             kind="eval")
        batch = self.score(reqs, enforce_budget=False)
        out = batch.metrics("eval/reward")
        _, low, high = mean_ci95(list(batch.values))
        out.update({"eval/reward/mean_ci95_low": low, "eval/reward/mean_ci95_high": high,
                    "eval/prompts": len(reqs)})
        out["eval/finished_fraction"] = sum(r["finished"] for r in reqs) / len(reqs)
        out["eval/length_mean"] = sum(len(r["response_ids"]) for r in reqs) / len(reqs)
        out["time/eval_s"] = time.perf_counter() - t0
        return out

    # ---- the run ----
    def run(self) -> TrainResult:
        cfg = self.cfg
        save_config(cfg, self.out / "config.yaml")
        resumed = self.resume()
        prepare_metrics_file(self.out, self.step if resumed else None)  # torn lines dropped; never overwritten
        # before the first rollout (fresh or resumed) the generators get the learner's weights, checked
        self.sync.sync()
        if cfg.weight_sync.verify or resumed:
            self.sync.verify()
        history: list[dict[str, Any]] = []
        bar = _progress(cfg.train.total_steps, self.step, cfg.train.progress)
        with MetricsLogger(self.out, tensorboard=cfg.logging.tensorboard, wandb_project=cfg.logging.wandb_project,
                           run_name=cfg.run_name, config=config_to_dict(cfg), append=True) as logger:
            if cfg.train.eval_at_start and self.step == 0 and self.eval_rows:
                logger.log(0, self.evaluate())
            limit_s = 60 * cfg.train.time_limit_minutes if cfg.train.time_limit_minutes else None
            loop_start = time.monotonic()
            while self.step < cfg.train.total_steps:
                metrics = self.train_step()
                out_of_time = limit_s is not None and time.monotonic() - loop_start >= limit_s
                last = self.step == cfg.train.total_steps or out_of_time
                if out_of_time and self.step < cfg.train.total_steps:
                    log.info("train.time_limit_minutes=%g reached after step %d of %d: this step is the last",
                             cfg.train.time_limit_minutes, self.step, cfg.train.total_steps)
                    metrics["train/stopped_by_time_limit"] = 1.0
                if (cfg.train.eval_every and self.step % cfg.train.eval_every == 0) or last:
                    metrics.update(self.evaluate())
                logger.log(self.step, metrics)
                history.append(metrics)
                if (cfg.checkpoints.save_every and self.step % cfg.checkpoints.save_every == 0) or last:
                    self.save()
                    plot_curves(self.out)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(reward=f"{metrics['reward/mean']:.3f}", s_per_step=f"{metrics['time/step_s']:.1f}")
                if last:
                    break
        if bar is not None:
            bar.close()
        self.sync.finish()  # the last overlapped reload: its errors belong to this run
        final = self.out / "final"
        self.learners.get(self.learners.call("save_hf", str(final)), "saving the final model")
        summary = {k: v for k, v in (history[-1] if history else {}).items() if isinstance(v, (int, float))}
        return TrainResult(output_dir=self.out, model_dir=final, metrics=summary, steps=self.step)


def _learner_sums(results: list[dict[str, Any]], mask: torch.Tensor) -> dict[str, float]:
    """Metrics the learners report as sums over their rows (rlvr.actors.learner.Learner.update), added up over
    ranks: the KL to the reference where the first update computed it, the generator-vs-learner log-prob gap
    (gen/logprob_diff: per sequence; mismatch/abs_diff_mean and _max: per token) and what the mismatch correction
    truncated, and the learners' speed (perf/learner_flop_per_s: useful FLOPs / compute seconds, the mean over
    ranks) and peak memory."""
    def total(key: str) -> float:
        return sum(r.get(key, 0.0) for r in results)

    out = {"perf/learner_flops": total("sum/flops"),
           "perf/learner_compute_s": max(r["sum/learner_compute_s"] for r in results),
           "perf/learner_flop_per_s": sum(r["sum/flops"] / max(r["sum/learner_compute_s"], 1e-9)
                                          for r in results) / len(results),
           "memory/learner_peak_rss_gib": max(r["memory/learner_peak_rss_gib"] for r in results)}
    if any("sum/kl" in r for r in results):
        out["kl/sequence_mean"] = total("sum/kl") / mask.shape[0]
        out["kl/token_mean"] = total("sum/kl") / max(float(mask.sum()), 1.0)
    if total("sum/gap_rows"):
        out["gen/logprob_diff"] = total("sum/gap") / total("sum/gap_rows")
    if total("sum/gap_tokens"):
        out["mismatch/abs_diff_mean"] = total("sum/gap_abs") / total("sum/gap_tokens")
        out["mismatch/abs_diff_max"] = max(r.get("max/gap_max", 0.0) for r in results)
    if any("sum/is_units" in r for r in results):
        units = max(total("sum/is_units"), 1.0)
        out["mismatch/truncated_fraction"] = total("sum/is_truncated") / units
        out["mismatch/is_weight_mean"] = total("sum/is_weight") / units
    return out


def _progress(total: int, start: int, enabled: bool):
    if not enabled:
        return None
    return tqdm(total=total, initial=start, desc="rlvr", unit="step", dynamic_ncols=True)


__all__ = ["RLVRTrainer", "request_seed"]
