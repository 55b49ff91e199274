"""Asynchronous rollouts (rollout.async_steps=1) against the synchronous loop, through a real local Ray on the tiny
model: with the weights frozen (lr 0) the two loops see the same policy at every step, so every step's rollouts,
rewards, loss and gradient norm must agree; with learning on, step 1 (staleness 0) must agree and later steps train
on one-step-stale rollouts; and the reference policy scored on the generators (ppo.reference_on_generators) gives
the run the learners' reference gives. (Exact resume with async_steps=1: tests/rlvr/test_rlvr_core.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("ray")
pytestmark = pytest.mark.ray

from rlvr_core_helpers import tiny_config, write_prompts  # noqa: E402

from core.metrics import read_metrics  # noqa: E402

SAME = ("prompt_ids", "reward/mean", "response/length_mean", "response/finished_fraction")
CLOSE = ("policy/loss", "policy/grad_norm", "policy/entropy", "kl/token_mean", "kl/sequence_mean")


@pytest.fixture(scope="module")
def ray_local():
    import ray

    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _run(tiny_model_dir, prompts: Path, out: Path, *overrides: str) -> list[dict]:
    from rlvr.driver import train

    cfg = tiny_config("tiny_grpo.yaml", tiny_model_dir, prompts, out, "train.total_steps=3",
                      "checkpoints.save_every=0", "ppo.num_mini_batches=1", "weight_sync.verify=false", *overrides)
    train(cfg)
    return [r for r in read_metrics(out) if r["step"] > 0]


def _agree(a: dict, b: dict, step: int) -> None:
    for key in SAME:
        assert a[key] == b[key], (step, key, a[key], b[key])
    for key in CLOSE:  # the async loop's old log-probs come from the generator: equal up to float rounding
        assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), (step, key, a[key], b[key])


def test_async_rollouts_match_the_synchronous_loop_when_staleness_is_zero(ray_local, tiny_model_dir, tmp_path):
    prompts = write_prompts(tmp_path / "prompts.jsonl")
    sync_frozen = _run(tiny_model_dir, prompts, tmp_path / "sync0", "optim.lr=0", "rollout.async_steps=0")
    async_frozen = _run(tiny_model_dir, prompts, tmp_path / "async0", "optim.lr=0", "rollout.async_steps=1")
    assert [r["rollout/staleness"] for r in sync_frozen] == [0, 0, 0]
    assert [r["rollout/staleness"] for r in async_frozen] == [0, 1, 1]
    for step, (a, b) in enumerate(zip(sync_frozen, async_frozen), 1):
        _agree(a, b, step)  # frozen weights: a stale policy is the same policy
        assert b["gen/logprob_diff"] < 1e-4  # the generator's log-probs are the learner's at the same temperature

    learning = _run(tiny_model_dir, prompts, tmp_path / "async", "rollout.async_steps=1")
    _agree(sync_frozen[0], learning[0], 1)  # step 1: generated and trained with the starting weights
    assert learning[1]["prompt_ids"] == sync_frozen[1]["prompt_ids"]  # same prompts in the same order
    assert learning[1]["policy/ratio_mean"] != 1.0  # one update since the batch was generated
    assert learning[1]["gen/logprob_diff"] > async_frozen[1]["gen/logprob_diff"]

    # the reference scored in the generators' processes (overlapping the update): the same run up to float rounding
    on_generators = _run(tiny_model_dir, prompts, tmp_path / "async_ref", "rollout.async_steps=1",
                         "ppo.reference_on_generators=true")
    for step, (a, b) in enumerate(zip(learning, on_generators), 1):
        _agree(a, b, step)
    assert on_generators[-1]["kl/token_mean"] > 0  # step 3's rollouts came from the weights after step 1
