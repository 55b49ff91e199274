"""RLVR core end to end on the tiny random model through a real local Ray: PPO and GRPO runs writing checkpoints
and metrics, exact kill-and-resume, the weight-sync check (both transports), dead-generator detection, and
determinism. One Ray instance for the module (starting Ray costs ~5 s)."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("ray")
pytestmark = pytest.mark.ray

from rlvr_core_helpers import REPO, tiny_config, write_prompts  # noqa: E402

from core.checkpoint import CheckpointManager, is_complete  # noqa: E402
from core.metrics import read_metrics  # noqa: E402

COMPARED = ("policy/loss", "policy/grad_norm", "lr", "reward/mean", "value/loss", "policy/entropy",
            "response/length_mean", "prompt_ids")


@pytest.fixture(scope="module")
def ray_local():
    import ray

    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def prompts(tmp_path_factory) -> Path:
    return write_prompts(tmp_path_factory.mktemp("prompts") / "prompts.jsonl")


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def _check_ppo_run(result, cfg, out: Path, model_dir: Path, steps: int) -> None:
    """What a finished PPO run must have written: per-step metrics, sealed checkpoints, a loadable final model."""
    from transformers import AutoModelForCausalLM

    assert result.steps == steps
    rows = [r for r in read_metrics(out) if r["step"] > 0]
    assert [r["step"] for r in rows] == list(range(1, steps + 1))
    for r in rows:
        for key in ("policy/loss", "policy/grad_norm", "value/loss", "value/grad_norm", "policy/entropy",
                    "policy/clipfrac", "kl/sequence_mean", "reward/mean", "reward/errors", "reward/timeouts",
                    "response/length_mean", "time/generation_s", "time/scoring_s", "time/learner_s",
                    "time/sync_s", "weight_sync/max_logprob_diff"):
            assert _finite(r[key]), (key, r.get(key))
        # asynchronous rollouts: the step only waits for generation, so no generation rate is claimed
        assert ("tokens_per_s/generation" in r) == (cfg.rollout.async_steps == 0)
        assert r["rollout/staleness"] == (0 if cfg.rollout.async_steps == 0 or r["step"] == 1 else 1)
        assert r["policy/grad_norm"] > 0
        assert r["reward/errors"] == 0 and r["reward/timeouts"] == 0
        assert r["reward/rlvr_core_verifier:has_digit/count"] == cfg.rollout_batch_size
        assert r["weight_sync/max_logprob_diff"] <= cfg.weight_sync.tolerance
        assert len(r["prompt_ids"]) == cfg.rollout.prompts_per_step
    assert [("eval/reward/mean" in r) for r in rows] == [s % 2 == 0 or s == steps for s in range(1, steps + 1)]

    latest = CheckpointManager(out / "checkpoints").latest()
    assert latest is not None and latest.name == f"step_{steps:08d}" and is_complete(latest)
    assert (latest / "hf" / "model.safetensors").is_file() and (latest / "trainer_state.pt").is_file()
    assert (out / "config.yaml").is_file()
    # what a resume restores from the checkpoint, compared with the config on resume (a changed lr is refused)
    optimiser = json.loads((latest / "MANIFEST.json").read_text())["optimiser"]
    assert optimiser["optim"]["lr"] == cfg.optim.lr and "value_optim" in optimiser  # PPO: the critic's too
    start = AutoModelForCausalLM.from_pretrained(model_dir)
    final = AutoModelForCausalLM.from_pretrained(result.model_dir)  # HF format, and trained
    moved = sum((a - b).abs().sum().item() for a, b in zip(start.parameters(), final.parameters()))
    assert moved > 0


@pytest.mark.parametrize("backend", ["hf", "vllm"])
def test_grpo_run_and_learner_sharding_invariance(ray_local, tiny_model_dir, prompts, tmp_path, backend):
    """GRPO, once on 1 learner rank (4 micro-batches accumulated) and once on 2 ranks (2 each), one optimiser step
    per RL step: same rollouts, and the same loss and gradient norm up to float rounding (STYLE.md #3: the loss is
    normalised by global token counts). With HF generation, so it runs wherever the package does; again with
    vLLM where it is installed."""
    if backend == "vllm":
        pytest.importorskip("vllm")
    from rlvr.driver import train

    curves = []
    for name, world in (("w1", 1), ("w2", 2)):
        cfg = tiny_config("tiny_grpo.yaml", tiny_model_dir, prompts, tmp_path / name, f"generation.backend={backend}",
                          "train.total_steps=2", "checkpoints.save_every=0", "optim.per_device_batch_size=2",
                          "ppo.num_mini_batches=1", f"dist.world_size={world}")
        train(cfg)
        curves.append(read_metrics(tmp_path / name))
    a, b = curves
    assert [r["step"] for r in a] == [1, 2]
    assert all("value/loss" not in r for r in a)  # no critic in GRPO
    assert any(r["reward/mean"] > 0 for r in a), "the digit verifier should fire on some random responses"
    assert (tmp_path / "w1" / "final" / "config.json").is_file()
    ra, rb = a[0], b[0]  # step 1: identical weights and seeds, so identical rollouts
    assert ra["prompt_ids"] == rb["prompt_ids"] and ra["reward/mean"] == rb["reward/mean"]
    assert ra["response/length_mean"] == rb["response/length_mean"]
    for key in ("policy/loss", "policy/grad_norm", "policy/entropy", "kl/token_mean"):
        assert ra[key] == pytest.approx(rb[key], rel=1e-4, abs=1e-6), key


def _wait_for(predicate, timeout_s: float, what: str, proc=None):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process exited (rc {proc.returncode}) before {what}")
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.parametrize("async_steps", [0, 1])
def test_kill_after_checkpoint_and_resume_is_exact(ray_local, tiny_model_dir, prompts, tmp_path, async_steps):
    """An uninterrupted 4-step run vs. a run SIGKILLed after its step-2 checkpoint (mid step 3) and resumed:
    the same per-step loss, grad norm, LR, reward and prompt ids; no step lost or repeated. Also with
    asynchronous rollouts (rollout.async_steps=1, and the reference scored on the generators): the checkpoint
    holds the batch of step 3, generated during step 2 with the weights of step 1, and its reference log-probs,
    and the resumed run trains on it."""
    from rlvr.driver import train

    common = ["train.total_steps=4", "checkpoints.save_every=2", "weight_sync.verify=true", "train.eval_every=2",
              "data.eval_size=4", "train.eval_at_start=true", f"rollout.async_steps={async_steps}",
              f"ppo.reference_on_generators={bool(async_steps)}"]
    full = tiny_config("tiny_ppo.yaml", tiny_model_dir, prompts, tmp_path / "full", *common, f"data.eval=[{prompts}]")
    _check_ppo_run(train(full), full, tmp_path / "full", tiny_model_dir, 4)

    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    env.pop("RAY_ADDRESS", None)  # the child starts its own local Ray
    cmd = [sys.executable, "-m", "rlvr.cli", "train", "--config", str(REPO / "configs/rlvr/tiny_ppo.yaml"),
           f"model={tiny_model_dir}", f"output_dir={out}", f"data.train=[{prompts}]", f"data.eval=[{prompts}]",
           "train.progress=false", "logging.tensorboard=false", *common]
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        marker = out / "checkpoints" / "latest"
        _wait_for(lambda: marker.is_file() and marker.read_text().strip() == "step_00000002", 400,
                  "the step-2 checkpoint", proc)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and the local Ray it started (its own session)
        proc.wait()
    assert CheckpointManager(out / "checkpoints").latest().name == "step_00000002"

    resumed = tiny_config("tiny_ppo.yaml", tiny_model_dir, prompts, out, *common, f"data.eval=[{prompts}]",
                          "checkpoints.resume=must")
    _check_ppo_run(train(resumed), resumed, out, tiny_model_dir, 4)

    # steps 1-2 come from another process (two runs, same seed: identical), 3-4 from the resumed run
    a, b = read_metrics(tmp_path / "full"), read_metrics(out)
    assert [r["step"] for r in b] == [0, 1, 2, 3, 4]
    for ra, rb in zip(a, b):
        for key in (*COMPARED, "eval/reward/mean", "value/grad_norm", "rollout/staleness"):
            assert ra.get(key) == rb.get(key), (ra["step"], key, ra.get(key), rb.get(key))
    assert [r["rollout/staleness"] for r in b[1:]] == ([0, 1, 1, 1] if async_steps else [0] * 4)


def test_weight_sync_check_catches_stale_generators_both_transports_and_stalls(ray_local, tiny_model_dir, prompts, tmp_path):
    import ray
    import torch

    from rlvr.actors.group import ActorGroup
    from rlvr.errors import WeightSyncError
    from rlvr.trainer import RLVRTrainer
    from rlvr.weight_sync import WeightSync

    cfg = tiny_config("tiny_ppo.yaml", tiny_model_dir, prompts, tmp_path / "ws", "generation.num_generators=2")
    trainer = RLVRTrainer(cfg)
    try:
        trainer.start_actors()
        trainer.sync.sync()
        assert trainer.sync.verify() <= cfg.weight_sync.tolerance
        # corrupt generator 1 (as a stale/garbled sync would): the check must fail and name it
        sd = ray.get(trainer.learners.actors[0].full_state_dict.remote())
        noisy = {k: v + 0.05 * torch.randn_like(v) for k, v in sd.items()}
        ray.get(trainer.generators.actors[1].load_weights.remote(noisy))
        with pytest.raises(WeightSyncError, match="generator 1"):
            trainer.sync.verify()
        # the collective transport (gloo on CPU; NCCL on GPU is the same code) repairs it
        gloo = WeightSync(trainer.learners, trainer.generators, transport="gloo", timeout_s=60, tolerance=1e-4,
                          probe_prompt=trainer.sync.probe_prompt)
        gloo.sync()
        assert gloo.verify() <= 1e-4
        # overlapped (asynchronous rollouts): sync(wait=False) leaves the reload pending; a generator still runs it
        # before any later call, so the next check sees the learner's weights again
        ray.get(trainer.generators.actors[1].load_weights.remote(noisy))
        trainer.sync.sync(wait=False)
        assert trainer.sync.pending
        assert trainer.sync.verify() <= cfg.weight_sync.tolerance and not trainer.sync.pending
        # ... and a reload that fails is raised by the next wait on it, naming the generator
        class WrongWeights:  # a learner whose weights do not fit the generators' model
            def full_state_dict(self):
                return {"not.a.weight": torch.zeros(1)}

        wrong_learner = ray.remote(num_cpus=0)(WrongWeights).remote()
        wrong = WeightSync(ActorGroup([wrong_learner], ["learner rank 0"], timeout_s=60), trainer.generators,
                           transport="object_store", timeout_s=60, tolerance=1e-4,
                           probe_prompt=trainer.sync.probe_prompt)
        wrong.sync(wait=False)
        with pytest.raises(ray.exceptions.RayTaskError, match="not.a.weight") as caught:
            wrong.finish()
        assert caught.value.actor_name.startswith("generator")
        ray.kill(wrong_learner)
        # a group with a member that never joins (busy elsewhere) is an error naming the address, not a hang
        class NeverJoins:  # defined here: pickled by value, so the worker needs no import of this module
            def join_weight_sync(self, group_args):
                time.sleep(120)

        sleeper = ray.remote(num_cpus=0)(NeverJoins).remote()
        members = ActorGroup([trainer.generators.actors[0], sleeper], ["generator 0", "a member that never joins"],
                             timeout_s=5)
        stalled = WeightSync(trainer.learners, members, transport="gloo", timeout_s=5, startup_timeout_s=5,
                             tolerance=1e-4, probe_prompt=trainer.sync.probe_prompt)
        with pytest.raises(WeightSyncError, match=r"weight-sync group \(gloo\) did not form at [0-9.]+:[0-9]+"):
            stalled.sync()
        ray.kill(sleeper)
    finally:
        trainer.stop_actors()


def test_dead_generator_stops_the_run_quickly_with_a_clear_error(ray_local, tiny_model_dir, prompts, tmp_path):
    from rlvr.driver import train
    from rlvr.errors import ActorFailure

    out = tmp_path / "dead"
    cfg = tiny_config("tiny_ppo.yaml", tiny_model_dir, prompts, out, "train.total_steps=200", "checkpoints.save_every=1",
                      "rollout.max_new_tokens=32")
    errors: list[BaseException] = []

    def run():
        try:
            train(cfg)
        except BaseException as err:  # noqa: BLE001 - handed to the test thread for assertions
            errors.append(err)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    _wait_for(lambda: (out / "metrics.jsonl").is_file() and len(read_metrics(out)) >= 1, 300, "the first step")
    pid = json.loads((out / "actors.json").read_text())["generators"][0]["pid"]
    os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()
    t.join(timeout=120)
    assert not t.is_alive(), "the run did not stop after its generator died"
    detected_after = time.monotonic() - killed_at
    assert errors and isinstance(errors[0], ActorFailure), errors
    assert "generator 0" in str(errors[0]) and str(pid) in str(errors[0]) and "died" in str(errors[0])
    latest = CheckpointManager(out / "checkpoints").latest()
    assert latest is not None and is_complete(latest)  # the last checkpoint is intact
    print(f"dead generator detected after {detected_after:.1f}s")


def test_time_limit_ends_the_run_after_the_step_that_passes_it(ray_local, tiny_model_dir, prompts, tmp_path):
    """train.time_limit_minutes: a limit below one step's time makes step 1 the last, with what a last step gets
    (evaluation, a sealed checkpoint, final/), with asynchronous rollouts' batch for step 2 still in flight."""
    from rlvr.driver import train

    out = tmp_path / "limited"
    cfg = tiny_config("tiny_ppo.yaml", tiny_model_dir, prompts, out, "train.total_steps=50",
                      "checkpoints.save_every=0", "rollout.async_steps=1", "train.time_limit_minutes=1e-6",
                      f"data.eval=[{prompts}]", "data.eval_size=2", "train.eval_every=0")
    result = train(cfg)
    rows = [r for r in read_metrics(out) if r["step"] > 0]
    assert result.steps == 1 and [r["step"] for r in rows] == [1]
    assert rows[0]["train/stopped_by_time_limit"] == 1.0 and "eval/reward/mean" in rows[0]
    latest = CheckpointManager(out / "checkpoints").latest()
    assert latest is not None and latest.name == "step_00000001" and is_complete(latest)
    assert (result.model_dir / "config.json").is_file()
