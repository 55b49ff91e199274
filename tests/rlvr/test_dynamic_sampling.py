"""DAPO's data side. Without Ray: Rollouts.dynamic_batch on stub generators keeps the informative groups in draw
order, draws prompts_per_step more prompts a round (seeded as prompt index round x P + p), stops at
max_sampling_rounds and fills a short batch with dropped groups. Through a real local Ray on the tiny model: a run
with the dapo preset (dynamic sampling + soft overlong punishment), asynchronous rollouts, the overlong filter and
the adaptive KL controller shows each acting in its metrics, and a run SIGKILLed after its step-2 checkpoint and
resumed repeats the uninterrupted run exactly (losses, rewards, prompts, kept fractions, penalties, beta)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from rlvr_core_helpers import REPO, tiny_config, write_prompts

from core.config import load_config
from core.metrics import read_metrics
from rewards.base import Score
from rewards.scoring import BatchScores
from rlvr.actors.generator import Rollout
from rlvr.algorithms import adaptive_kl_coef
from rlvr.config import RLVRConfig
from rlvr.data.sampler import PromptSampler
from rlvr.rollouts import Rollouts, request_seed

P, S = 3, 2


class _Remote:
    def __init__(self, fn):
        self.remote = fn


class _Generators:
    """The GeneratorGroup surface Rollouts uses: one actor whose `generate.remote` returns the result itself."""

    def __init__(self):
        self.calls: list[list[int]] = []

        def generate(prompts, seeds, **_):
            self.calls.append(list(seeds))
            return [Rollout([seed % 5], [-0.5], "stop") for seed in seeds]

        self.actors = [SimpleNamespace(generate=_Remote(generate))]

    def __len__(self) -> int:
        return len(self.actors)

    def get(self, refs, what, ranks=None, timeout_s=None):
        return refs


def _scores(reqs, rule) -> BatchScores:
    """rule(position in the list, request) -> score."""
    return BatchScores([Score(rule(i, r), "") for i, r in enumerate(reqs)], {}, errors=0, timeouts=0)


def _rollouts(tmp_path, rounds: int) -> tuple[Rollouts, _Generators, PromptSampler]:
    cfg = load_config(RLVRConfig, REPO / "configs" / "rlvr" / "tiny_grpo.yaml", [
        "model=tiny-random", f"output_dir={tmp_path}", f"rollout.prompts_per_step={P}",
        f"rollout.samples_per_prompt={S}", "optim.per_device_batch_size=3", "ppo.num_mini_batches=1",
        "rollout.dynamic_sampling=true", f"rollout.max_sampling_rounds={rounds}"])
    rows = [SimpleNamespace(id=f"p{i}", prompt_ids=[i]) for i in range(40)]
    sampler = PromptSampler(rows, P, seed=0)
    gens = _Generators()
    return Rollouts(cfg, gens, sampler, rows), gens, sampler


def test_dynamic_batch_keeps_informative_groups_and_draws_seeded_rounds(tmp_path):
    ro, gens, sampler = _rollouts(tmp_path, rounds=4)
    batch = ro.collect(ro.submit(sampler.next_batch(), step=7, samples=S, temperature=1.0, kind="train"))

    constant = {batch.rows[0].id}  # this prompt, and every prompt with an even id, scores 1 whatever it says

    def rule(i, req):  # the others score 0 and 1 (their two samples): informative
        row = req["row"]
        return 1.0 if row.id in constant or int(row.id[1:]) % 2 == 0 else float(i % 2)

    out, values, every, metrics = ro.dynamic_batch(batch, _scores(batch.reqs, rule), lambda r: _scores(r, rule))
    rounds = int(metrics["dynamic_sampling/rounds"])
    assert len(gens.calls) == rounds > 1 and sampler.samples_seen == rounds * P
    for r, seeds in enumerate(gens.calls):  # round r's prompt p is prompt index r * P + p
        assert seeds == [request_seed(0, 7, r * P + p, k) for p in range(P) for k in range(S)]
    drawn = [q["row"].id for q in batch.reqs[::S]] + [f"p{i}" for i in sampler._order[P:rounds * P]]
    informative = [i for i in drawn if i not in constant and int(i[1:]) % 2 == 1]
    assert [r.id for r in out.rows] == informative[:P]  # the first P informative groups, in draw order
    assert metrics["dynamic_sampling/kept_fraction"] == len(informative) / len(drawn) < 1
    assert len(out.reqs) == P * S and values == [0.0, 1.0] * P
    for g, row in enumerate(out.rows):
        assert {q["row"].id for q in out.reqs[g * S:(g + 1) * S]} == {row.id}  # each group's own samples
    assert len(every.scores) == rounds * P * S and metrics["dynamic_sampling/filled_groups"] == 0


def test_dynamic_batch_stops_after_max_rounds_and_fills_with_dropped_groups(tmp_path):
    ro, gens, sampler = _rollouts(tmp_path, rounds=2)
    batch = ro.collect(ro.submit(sampler.next_batch(), step=1, samples=S, temperature=1.0, kind="train"))
    first = [r.id for r in batch.rows]
    out, values, _, metrics = ro.dynamic_batch(batch, _scores(batch.reqs, lambda i, q: 1.0), lambda r: _scores(
        r, lambda i, q: 1.0))  # every group all-correct: nothing informative
    assert metrics == {"dynamic_sampling/kept_fraction": 0.0, "dynamic_sampling/rounds": 2.0,
                       "dynamic_sampling/filled_groups": float(P)}
    assert [r.id for r in out.rows] == first and values == [1.0] * (P * S)  # the earliest dropped groups


# ---- end to end through Ray ----

COMPARED = ("policy/loss", "policy/grad_norm", "reward/mean", "reward/trained_mean", "prompt_ids",
            "dynamic_sampling/kept_fraction", "dynamic_sampling/rounds", "reward/overlong_penalty_mean",
            "reward/overlong_filtered_fraction", "kl/coef", "kl/sequence_mean", "rollout/staleness")


@pytest.fixture(scope="module")
def ray_local():
    pytest.importorskip("ray")
    import ray

    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _wait_for_checkpoint(marker: Path, proc, timeout_s: float = 400) -> None:
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if marker.is_file() and marker.read_text().strip() == "step_00000002":
            return
        if proc.poll() is not None:
            raise AssertionError(f"the run exited (rc {proc.returncode}) before its step-2 checkpoint")
        time.sleep(0.5)
    raise AssertionError("timed out waiting for the step-2 checkpoint")


@pytest.mark.ray
def test_dapo_run_acts_and_kill_and_resume_is_exact(ray_local, tiny_model_dir, tmp_path):
    from rlvr.driver import train

    prompts = write_prompts(tmp_path / "prompts.jsonl", n=24)
    common = ["algorithm=dapo", "train.total_steps=4", "checkpoints.save_every=2", "rollout.async_steps=1",
              "rollout.max_sampling_rounds=3", "rewards.overlong_buffer=8", "rewards.overlong_filter=true",
              "ppo.kl_controller=adaptive", "ppo.kl_horizon=20", "ppo.kl_target=0.001", "weight_sync.verify=false"]
    full = tiny_config("tiny_grpo.yaml", tiny_model_dir, prompts, tmp_path / "full", *common)
    assert full.rollout.dynamic_sampling and full.ppo.clip_eps_high == 0.28 and full.ppo.kl_coef == 0.05
    train(full)
    a = [r for r in read_metrics(tmp_path / "full") if r["step"] > 0]
    assert [r["step"] for r in a] == [1, 2, 3, 4]
    # each part visibly acting: groups dropped and more rounds drawn, lengths penalised, cut-off samples
    # masked, beta moving (the KL is far above the tiny target)
    assert min(r["dynamic_sampling/kept_fraction"] for r in a) < 1
    assert max(r["dynamic_sampling/rounds"] for r in a) > 1
    assert all(r["reward/overlong_penalty_mean"] < 0 and r["reward/overlong_penalised_fraction"] > 0 for r in a)
    assert max(r["reward/overlong_filtered_fraction"] for r in a) > 0
    assert a[0]["kl/coef"] == 0.05
    for prev, now in zip(a, a[1:]):  # beta follows the controller from each step's KL (8 samples a step)
        assert now["kl/coef"] == pytest.approx(adaptive_kl_coef(prev["kl/coef"], prev["kl/sequence_mean"],
                                                                target=0.001, horizon=20, n_steps=8), rel=1e-12)
    assert len({r["kl/coef"] for r in a}) == 4
    assert [r["rollout/staleness"] for r in a] == [0, 1, 1, 1]
    assert all(len(r["prompt_ids"]) == full.rollout.prompts_per_step for r in a)

    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    env.pop("RAY_ADDRESS", None)  # the child starts its own local Ray
    cmd = [sys.executable, "-m", "rlvr.cli", "train", "--config", str(REPO / "configs/rlvr/tiny_grpo.yaml"),
           f"model={tiny_model_dir}", f"output_dir={out}", f"data.train=[{prompts}]", "data.eval=[]",
           "train.progress=false", "logging.tensorboard=false", *common]
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        _wait_for_checkpoint(out / "checkpoints" / "latest", proc)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and the local Ray it started (its own session)
        proc.wait()
    resumed = tiny_config("tiny_grpo.yaml", tiny_model_dir, prompts, out, *common, "checkpoints.resume=must")
    train(resumed)
    b = [r for r in read_metrics(out) if r["step"] > 0]
    assert [r["step"] for r in b] == [1, 2, 3, 4]
    for ra, rb in zip(a, b):  # steps 1-2 from the killed process, 3-4 from the resumed run
        for key in COMPARED:
            assert ra.get(key) == rb.get(key), (ra["step"], key, ra.get(key), rb.get(key))
