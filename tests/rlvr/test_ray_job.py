"""`rlvr train` as a Ray job on a real local Ray head (started on free loopback ports, stopped by its PID):

1. a PPO run of the tiny model submitted with `ray job submit --working-dir <repo>` succeeds and writes a complete
   checkpoint, the final HF model and per-step metrics, with the prompts the seeded sampler prescribes;
2. a run stopped part-way (`ray job stop`, after its first checkpoint) and submitted again with the same
   output_dir resumes: every step 1..N appears once in metrics.jsonl, the steps up to the checkpoint come from the
   first job, the rest from the second, and each step's prompts, reward and loss equal the uninterrupted run's
   (RELIABILITY.md #1).

3. the head runs with Ray's token authentication (tests/rlvr/ray_cluster.py): the jobs above are submitted with
   the token, and a client without it, or with a wrong one, is refused by the jobs API and by `ray.init`.

Both jobs run the same config, so the uninterrupted run of test 1 is the reference for test 2.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest
from ray_cluster import (
    RayHead,
    _ray_cli,
    client_env,
    job_logs,
    job_status,
    local_ray_head,
    new_token,
    stop_job,
    submit_job,
    wait_for_job,
)

pytestmark = [pytest.mark.ray, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
CONFIG = "configs/rlvr/tiny_ppo.yaml"
# A step takes ~0.5-1 s here: after the first checkpoint (step 2) 18 more steps leave a window of several seconds
# to stop the run in, and 20 steps of 4 prompts cross an epoch of the 64 prompts (a resumed sampler must too).
TOTAL_STEPS = 20
SAVE_EVERY = 2
OVERRIDES = [f"train.total_steps={TOTAL_STEPS}", f"checkpoints.save_every={SAVE_EVERY}", "train.progress=false",
             "rollout.max_new_tokens=48", "checkpoints.resume=auto"]
JOB_TIMEOUT = 900


def _entrypoint(output_dir: Path) -> list[str]:
    # `python -m rlvr.cli` runs the uploaded copy of the repo (the job's working dir is first on sys.path);
    # the head was started with this venv first on PATH, so `python` is the venv's.
    return ["python", "-m", "rlvr.cli", "train", "--config", CONFIG, f"output_dir={output_dir}", *OVERRIDES]


def _submit_and_wait(head: RayHead, output_dir: Path, tag: str) -> None:
    sid = f"{tag}-{uuid.uuid4().hex[:8]}"
    proc = submit_job(head, _entrypoint(output_dir), working_dir=REPO, submission_id=sid, timeout=JOB_TIMEOUT,
                      log_path=output_dir.parent / f"{sid}.log")
    assert proc.returncode == 0, (f"`ray job submit` exited {proc.returncode} (job {sid} "
                                  f"{wait_for_job(head, sid, timeout=30)}):\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}")


def _metrics(output_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


def _expected_prompt_ids(steps: int) -> list[list[str]]:
    """The prompt ids an uninterrupted run must sample: the sampler over the config's data, seed and batch."""
    from transformers import AutoTokenizer

    from core.config import load_config
    from core.models import resolve_model
    from rlvr.config import RLVRConfig
    from rlvr.data.prompts import load_prompts
    from rlvr.data.sampler import PromptSampler

    cfg = load_config(RLVRConfig, REPO / CONFIG, ["output_dir=/unused", *OVERRIDES])
    tok = AutoTokenizer.from_pretrained(resolve_model(cfg.tokenizer or cfg.model))
    prompts = load_prompts(cfg.data.train, tokenizer=tok, max_prompt_tokens=cfg.data.max_prompt_tokens,
                           max_dropped_fraction=cfg.data.max_dropped_fraction)
    sampler = PromptSampler(prompts, cfg.rollout.prompts_per_step, seed=cfg.seed)
    return [[r.id for r in sampler.next_batch()] for _ in range(steps)]


@pytest.fixture(scope="module")
def ray_head():
    """A real local Ray head for this module: 2 CPUs (one learner, one generator), stopped by its PID."""
    with local_ray_head(num_cpus=2) as head:
        yield head


@pytest.fixture(scope="module")
def full_run(ray_head, tmp_path_factory) -> Path:
    """One uninterrupted run submitted as a Ray job; its output folder."""
    out = tmp_path_factory.mktemp("ray-job-full") / "run"
    _submit_and_wait(ray_head, out, "full")
    return out


def test_ray_job_ppo_run_writes_checkpoint_model_and_metrics(full_run):
    from transformers import AutoModelForCausalLM

    from core.checkpoint import CheckpointManager, is_complete

    rows = _metrics(full_run)
    assert [r["step"] for r in rows] == list(range(1, TOTAL_STEPS + 1))
    for r in rows:
        for key in ("reward/mean", "policy/loss", "time/step_s", "time/generation_s", "time/learner_s"):
            assert isinstance(r[key], (int, float)), f"step {r['step']}: {key} missing or not a number"
    assert [r["prompt_ids"] for r in rows] == _expected_prompt_ids(TOTAL_STEPS)

    ckpts = CheckpointManager(full_run / "checkpoints")
    latest = ckpts.latest()
    assert latest is not None and is_complete(latest)
    assert CheckpointManager.step_of(latest) == TOTAL_STEPS
    assert (full_run / "checkpoints" / "latest").read_text().strip() == latest.name
    assert (full_run / "config.yaml").is_file()
    model = AutoModelForCausalLM.from_pretrained(full_run / "final")
    assert model.num_parameters() > 0


def test_ray_job_stopped_after_checkpoint_resumes_without_lost_or_repeated_steps(ray_head, full_run, tmp_path):
    from core.checkpoint import CheckpointManager

    out = tmp_path / "run"
    sid = f"killed-{uuid.uuid4().hex[:8]}"
    proc = submit_job(ray_head, _entrypoint(out), working_dir=REPO, submission_id=sid, wait=False, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    ckpts = CheckpointManager(out / "checkpoints")
    deadline = time.monotonic() + JOB_TIMEOUT
    while ckpts.latest() is None:
        status = job_status(ray_head, sid)
        assert status in ("PENDING", "RUNNING"), f"job {status} before its first checkpoint:\n{job_logs(ray_head, sid)}"
        assert time.monotonic() < deadline, f"no checkpoint after {JOB_TIMEOUT} s:\n{job_logs(ray_head, sid)}"
        time.sleep(0.2)
    final_status = stop_job(ray_head, sid)
    assert final_status == "STOPPED", (f"the run was not stopped part-way (status {final_status}); the test needs "
                                       f"slower steps:\n{job_logs(ray_head, sid)}")
    killed_at = CheckpointManager.step_of(ckpts.latest())
    assert 0 < killed_at < TOTAL_STEPS

    resubmitted_at = time.time()
    _submit_and_wait(ray_head, out, "resumed")

    rows = _metrics(out)
    steps = [r["step"] for r in rows]
    assert steps == list(range(1, TOTAL_STEPS + 1)), f"steps lost or repeated after resume: {steps}"
    for r in rows:  # steps up to the checkpoint were not redone; the rest were done by the second job
        assert (r["time"] < resubmitted_at) == (r["step"] <= killed_at), (r["step"], killed_at)

    reference = _metrics(full_run)
    assert [r["prompt_ids"] for r in rows] == [r["prompt_ids"] for r in reference]
    for mine, ref in zip(rows, reference):
        for key in ("reward/mean", "policy/loss"):
            assert mine[key] == pytest.approx(ref[key], rel=1e-5, abs=1e-7), (mine["step"], key)
    assert CheckpointManager.step_of(ckpts.latest()) == TOTAL_STEPS


def test_a_client_without_the_clusters_token_is_refused(ray_head):
    import subprocess
    import sys

    assert ray_head.token and ray_head.env["RAY_AUTH_MODE"] == "token"
    listed = subprocess.run([_ray_cli(), "job", "list", "--address", ray_head.dashboard_url], env=ray_head.env,
                            capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr[-2000:]
    connect = f"import ray; ray.init(address={ray_head.gcs_address!r}); print('CONNECTED')"
    for name, env in (("no token", client_env()), ("a wrong token", client_env(token=new_token()))):
        refused = subprocess.run([_ray_cli(), "job", "list", "--address", ray_head.dashboard_url], env=env,
                                 capture_output=True, text=True, timeout=120)
        assert refused.returncode != 0, f"jobs API answered a client with {name}"
        assert "token" in (refused.stdout + refused.stderr).lower()
        driver = subprocess.run([sys.executable, "-c", connect], env=env, capture_output=True, text=True,
                                timeout=180)
        assert driver.returncode != 0 and "CONNECTED" not in driver.stdout, f"ray.init connected with {name}"
