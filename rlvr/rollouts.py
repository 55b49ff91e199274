"""Rollouts for the RL loop: generation requests sent to the generators, synchronously or `rollout.async_steps`
steps ahead of the learners.

Synchronous (async_steps 0): step t draws its prompts, generates with the weights of step t-1 and waits.

Asynchronous (async_steps k >= 1): when step t has collected its batch it submits the batches of steps up to t+k
(prompts drawn in step order, so every step gets the same prompts as in the synchronous loop) before the learners
train on step t. Generator actors run one call at a time, in the order they were sent, and the weight sync after
step t is sent after those submissions: a batch submitted during step t is generated with the weights of step
t-1, the one for step t+k is k updates old when it is trained on (`staleness`, logged as rollout/staleness). The
PPO ratio then uses the generators' own log-probs (the behaviour policy, at the learner's temperature; see
rlvr.actors.learner `old_logprobs_source`).

Determinism: every request's sampling seed is a function of (seed, step, prompt index, sample index)
(`request_seed`), so a batch depends only on its prompts and the weights it was generated with. A checkpoint
holds the batches in flight (collected first: token ids, log-probs, finish flags and the weights' step), and a
resumed run trains on exactly those; the batches it submits afterwards use the same weights as in the
uninterrupted run (the resumed generators get the checkpoint's weights, the ones the uninterrupted run synced at
that step). So a resume is exact for any k.

Dynamic sampling (rollout.dynamic_sampling, DAPO): once a step's batch is scored, the groups whose samples all got
the same score are dropped and further rounds of prompts_per_step prompts are drawn from the sampler, generated
and scored until prompts_per_step groups are kept or rollout.max_sampling_rounds rounds have run (a batch still
short is filled with dropped groups, earliest first). Round r's prompt p is seeded as prompt index r * P + p, so
every request stays a function of (seed, step, prompt, sample, round); the rounds are generated and consumed
within the step, after the step's own batch and (asynchronously) after the batches submitted ahead of it, whose
prompts were drawn first: the sampler's cursor after the step, which the checkpoint holds, is the same in a
resumed run.
"""

from __future__ import annotations

import hashlib
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import torch

from rewards.scoring import BatchScores, merge_batches
from rlvr.algorithms import informative_groups
from rlvr.config import RLVRConfig


def request_seed(seed: int, step: int, prompt_index: int, sample_index: int, kind: str = "train") -> int:
    """A sampling seed for one request, independent of batching and of which generator serves it."""
    digest = hashlib.sha256(f"{kind}/{seed}/{step}/{prompt_index}/{sample_index}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def _chunks(items: list, n: int) -> list[list]:
    """Split into n contiguous chunks of near-equal size (order kept)."""
    k, r = divmod(len(items), n)
    out, i = [], 0
    for j in range(n):
        size = k + (1 if j < r else 0)
        out.append(items[i:i + size])
        i += size
    return out


class Batch:
    """The requests of one step's (or one evaluation's) generation, in flight or collected."""

    def __init__(self, step: int, rows: list, reqs: list[dict[str, Any]], policy_step: int):
        self.step, self.rows, self.reqs, self.policy_step = step, rows, reqs, policy_step
        self.refs: list = []
        self.ref_scores: list = []  # ppo.reference_on_generators: each generator's reference log-probs
        self.used: list[int] = []
        self.timeout_s = 0.0

    @property
    def collected(self) -> bool:
        return not self.refs


class Rollouts:
    """Submits and collects generation for the trainer (rlvr.trainer.RLVRTrainer)."""

    def __init__(self, cfg: RLVRConfig, generators, sampler, rows: list):
        self.cfg = cfg
        self.generators = generators  # rlvr.actors.group.GeneratorGroup
        self.sampler = sampler  # rlvr.data.sampler.PromptSampler
        self.rows_by_id = {r.id: r for r in rows}
        self.inflight: deque[Batch] = deque()
        self.policy_step = 0  # the learner step whose weights the generators hold (set by the trainer's syncs)

    # ---- one generation call per generator ----
    def submit(self, rows: list, *, step: int, samples: int, temperature: float, kind: str,
               first_prompt: int = 0) -> Batch:
        """Send the requests (rows x samples, seeded by request_seed; row p is prompt index first_prompt + p) to
        the generators; returns at once."""
        cfg, gens = self.cfg, self.generators
        reqs = []
        for p, row in enumerate(rows):
            for k in range(samples):
                reqs.append({"row": row, "prompt_ids": row.prompt_ids,
                             "seed": request_seed(cfg.seed, step, first_prompt + p, k, kind)})
        batch = Batch(step, rows, reqs, self.policy_step)
        shards = _chunks(reqs, len(gens))
        batch.used = [i for i, shard in enumerate(shards) if shard]
        batch.refs = [gens.actors[i].generate.remote(
            [r["prompt_ids"] for r in shards[i]], [r["seed"] for r in shards[i]],
            max_new_tokens=cfg.rollout.max_new_tokens, temperature=temperature,
            top_p=cfg.rollout.top_p if kind == "train" else 1.0) for i in batch.used]
        if kind == "train" and cfg.reference_micro_batch_size:
            # queued behind the generation on the same actor, with its result: runs as soon as it is done
            batch.ref_scores = [gens.actors[i].score_reference.remote([r["prompt_ids"] for r in shards[i]], ref,
                                                                      temperature)
                                for i, ref in zip(batch.used, batch.refs)]
        batch.timeout_s = cfg.resources.generation_timeout_s(cfg.rollout.max_new_tokens,
                                                             max(len(s) for s in shards),
                                                             cfg.generation.max_num_seqs)
        return batch

    def collect(self, batch: Batch) -> Batch:
        """Wait for a submitted batch (bounded: resources.generation_timeout_s) and fill in its responses."""
        if batch.collected:
            return batch
        # a batch queued behind others waits for them too
        timeout = batch.timeout_s * (1 + len(self.inflight))
        outs = self.generators.get(batch.refs, "generation", ranks=batch.used, timeout_s=timeout)
        rollouts = [r for shard in outs for r in shard]
        for req, ro in zip(batch.reqs, rollouts):
            req.update(response_ids=ro.response_ids, logprobs=ro.logprobs, finished=ro.finish_reason == "stop")
        if batch.ref_scores:
            scored = self.generators.get(batch.ref_scores, "reference log-probs (on the generators)",
                                         ranks=batch.used, timeout_s=timeout)
            for req, lp in zip(batch.reqs, [lp for shard in scored for lp in shard]):
                req["ref_logprobs"] = lp
        batch.refs, batch.ref_scores = [], []
        return batch

    # ---- training steps ----
    def _submit_step(self, step: int) -> Batch:
        r = self.cfg.rollout
        return self.submit(self.sampler.next_batch(), step=step, samples=r.samples_per_prompt,
                           temperature=r.temperature, kind="train")

    def next_batch(self, step: int) -> tuple[Batch, float]:
        """The collected batch of training step `step`, and the seconds spent waiting for it. Asynchronous: then
        submits the batches of the following steps, up to step + async_steps (never past train.total_steps)."""
        t0 = time.perf_counter()
        if self.inflight:
            batch = self.inflight.popleft()
            if batch.step != step:
                raise RuntimeError(f"rollouts out of order: step {step} but the batch in flight is for step "
                                   f"{batch.step}")
        else:
            batch = self._submit_step(step)
        self.collect(batch)
        waited = time.perf_counter() - t0
        last = min(step + self.cfg.rollout.async_steps, self.cfg.train.total_steps)
        next_step = (self.inflight[-1].step if self.inflight else step) + 1
        for s in range(next_step, last + 1):
            self.inflight.append(self._submit_step(s))
        return batch, waited

    def dynamic_batch(self, batch: Batch, scores: BatchScores,
                      score: Callable[[list[dict[str, Any]]], BatchScores]
                      ) -> tuple[Batch, list[float], BatchScores, dict[str, float]]:
        """Dynamic sampling (module docstring) on the collected, scored batch of a training step: (the batch to
        train on, its scores in order, the scores of every sample generated this step, metrics). `score` scores
        a list of requests (the trainer's, error budget included)."""
        r = self.cfg.rollout
        P, S = r.prompts_per_step, r.samples_per_prompt
        kept: list[tuple[Any, list, list[float]]] = []  # (row, its S requests, their scores), in draw order
        dropped: list[tuple[Any, list, list[float]]] = []
        every = [scores]

        def split(b: Batch, values: list[float]) -> None:
            keep = informative_groups(torch.tensor(values), S).tolist()
            for g, row in enumerate(b.rows):
                group = (row, b.reqs[g * S:(g + 1) * S], values[g * S:(g + 1) * S])
                (kept if keep[g] else dropped).append(group)

        split(batch, scores.values)
        rounds = 1
        while len(kept) < P and rounds < r.max_sampling_rounds:
            extra = self.collect(self.submit(self.sampler.next_batch(), step=batch.step, samples=S,
                                             temperature=r.temperature, kind="train", first_prompt=rounds * P))
            every.append(score(extra.reqs))
            split(extra, every[-1].values)
            rounds += 1
        drawn = len(kept) + len(dropped)
        chosen = kept[:P]
        filled = P - len(chosen)
        chosen += dropped[:filled]
        out = Batch(batch.step, [g[0] for g in chosen], [q for g in chosen for q in g[1]], batch.policy_step)
        metrics = {"dynamic_sampling/kept_fraction": len(kept) / drawn, "dynamic_sampling/rounds": float(rounds),
                   "dynamic_sampling/filled_groups": float(filled)}
        return out, [v for g in chosen for v in g[2]], merge_batches(every), metrics

    # ---- checkpoints ----
    def state_dict(self) -> list[dict[str, Any]]:
        """The batches in flight, collected first, as plain data (loadable with weights_only=True)."""
        out = []
        for batch in self.inflight:
            self.collect(batch)
            out.append({"step": batch.step, "policy_step": batch.policy_step, "rows": [r.id for r in batch.rows],
                        "reqs": [{"row": req["row"].id, "seed": req["seed"], "response_ids": list(req["response_ids"]),
                                  "logprobs": [float(x) for x in req["logprobs"]], "finished": bool(req["finished"]),
                                  **({"ref_logprobs": [float(x) for x in req["ref_logprobs"]]}
                                     if req.get("ref_logprobs") is not None else {})}
                                 for req in batch.reqs]})
        return out

    def load_state_dict(self, state: list[dict[str, Any]]) -> None:
        self.inflight.clear()
        for b in state:
            rows = [self.rows_by_id[i] for i in b["rows"]]
            reqs = [{"row": self.rows_by_id[q["row"]], "prompt_ids": self.rows_by_id[q["row"]].prompt_ids,
                     "seed": q["seed"], "response_ids": q["response_ids"], "logprobs": q["logprobs"],
                     "finished": q["finished"], "ref_logprobs": q.get("ref_logprobs")} for q in b["reqs"]]
            self.inflight.append(Batch(b["step"], rows, reqs, b["policy_step"]))
