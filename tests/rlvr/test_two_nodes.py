"""`rlvr train` on a real two-node Ray cluster (tests/rlvr/ray_two_nodes.py: two network namespaces joined by a veth
pair, head 10.231.0.1 with 2 CPUs, worker 10.231.0.2 with 3 CPUs; each node's 127.0.0.1 is its own).

PPO on the tiny model with 2 learner ranks of 2 CPUs each: one rank fits on each node, and the generator (1 CPU)
only on the worker. The driver runs on the head, as `rlvr train` with RAY_ADDRESS or as a `ray job submit` job.

1. the run finishes, its ranks sat on different nodes and met at rank 0's node address, and every step's metrics
   equal those of the same run on one machine (a local Ray: the reference);
2. the same through `ray job submit` to the head's dashboard, with the weights sent over a gloo group between the
   nodes (`weight_sync.transport=gloo`) instead of the object store: still the same metrics;
3. killing the worker node's raylet after the first checkpoint stops the run within 30 s, naming the lost node;
   the same command on the restored cluster resumes, and steps 1..4 still equal the reference;
4. a rendezvous address nobody answers (`dist.master_addr`) fails within the start-up timeout, naming the rank,
   its node and the address;
5. an output_dir the worker node does not share with the head (a folder it sees as its own tmpfs) is refused
   at start, naming the rank and node that cannot see it;
6. the cluster runs with Ray's token authentication (one token for both nodes and the clients).

Skipped, with the reason, where network namespaces cannot be built (not root, no `ip netns`). About 5 minutes on
2 shared cores: one cluster for the module.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from ray_cluster import WORKING_DIR_EXCLUDES, _ray_cli

pytestmark = [pytest.mark.ray, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
CONFIG = "configs/rlvr/tiny_ppo.yaml"
COMMON = ["dist.world_size=2", "resources.learner_num_cpus=2", "optim.per_device_batch_size=2",
          "train.progress=false", "logging.tensorboard=false", "weight_sync.verify=true"]
STEPS = 4
COMPARED = ("prompt_ids", "reward/mean", "response/length_mean", "policy/loss", "policy/grad_norm", "value/loss",
            "kl/sequence_mean", "lr")


def _train(output_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "rlvr.cli", "train", "--config", CONFIG, f"output_dir={output_dir}", *COMMON,
            *extra]


def _metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]


def _assert_same_steps(run: list[dict], reference: list[dict], steps: int) -> None:
    by_step = {r["step"]: r for r in run}
    for ref in reference[:steps]:
        mine = by_step[ref["step"]]
        for key in COMPARED:
            if isinstance(ref[key], float):
                assert mine[key] == pytest.approx(ref[key], rel=1e-6, abs=1e-9), (ref["step"], key)
            else:
                assert mine[key] == ref[key], (ref["step"], key)


@pytest.fixture(scope="module")
def cluster():
    from ray_two_nodes import netns_unavailable, two_node_cluster

    reason = netns_unavailable()
    if reason:
        pytest.skip(f"two-node cluster unavailable: {reason}")
    with two_node_cluster(head_cpus=2, worker_cpus=3) as c:
        yield c


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> list[dict]:
    """The same 4-step run on one machine (its own local Ray, started by the driver)."""
    out = tmp_path_factory.mktemp("single-node") / "run"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run(_train(out, f"train.total_steps={STEPS}", "checkpoints.save_every=2"), cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return _metrics(out)


def _on_cluster(cluster, cmd: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
    return cluster.run("head", cmd, env={"RAY_ADDRESS": cluster.address}, cwd=REPO, timeout=timeout)


def test_two_learner_ranks_on_two_nodes_match_the_single_node_run(cluster, reference, tmp_path):
    out = tmp_path / "run"
    proc = _on_cluster(cluster, _train(out, f"train.total_steps={STEPS}", "checkpoints.save_every=2"))
    assert proc.returncode == 0, proc.stderr[-6000:]
    actors = json.loads((out / "actors.json").read_text())
    learner_nodes = [a["node_ip"] for a in actors["learners"]]
    assert sorted(learner_nodes) == [cluster.head.ip, cluster.worker.ip]
    assert [g["node_ip"] for g in actors["generators"]] == [cluster.worker.ip]
    assert actors["rendezvous"].startswith(learner_nodes[0] + ":")  # rank 0's node, not anyone's loopback
    rows = _metrics(out)
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
    _assert_same_steps(rows, reference, STEPS)


def test_ray_job_submit_on_two_nodes_matches_the_single_node_run(cluster, reference, tmp_path):
    out = tmp_path / "run"
    sid = f"two-nodes-{uuid.uuid4().hex[:8]}"
    entry = ["python", "-m", "rlvr.cli", "train", "--config", CONFIG, f"output_dir={out}", *COMMON,
             f"train.total_steps={STEPS}", "checkpoints.save_every=2", "weight_sync.transport=gloo"]
    proc = cluster.run("head", [_ray_cli(), "job", "submit", "--address", cluster.dashboard_url, "--submission-id",
                                sid, "--working-dir", str(REPO), "--runtime-env-json",
                                json.dumps({"excludes": WORKING_DIR_EXCLUDES}), "--", *entry], timeout=600)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    actors = json.loads((out / "actors.json").read_text())
    assert sorted(a["node_ip"] for a in actors["learners"]) == [cluster.head.ip, cluster.worker.ip]
    assert actors["weight_sync"] == "gloo"
    rows = _metrics(out)
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
    _assert_same_steps(rows, reference, STEPS)


def test_lost_worker_node_stops_the_run_within_30s_and_the_same_command_resumes(cluster, reference, tmp_path):
    out = tmp_path / "run"
    cmd = _train(out, "train.total_steps=8", "checkpoints.save_every=1")  # steps 5..8 give the kill time to land
    log_path = tmp_path / "killed.log"
    with open(log_path, "w") as log:
        proc = cluster.popen("head", cmd, env={"RAY_ADDRESS": cluster.address}, cwd=REPO, stdout=log)
    try:
        latest = out / "checkpoints" / "latest"
        deadline = time.monotonic() + 600
        while not latest.is_file():
            assert proc.poll() is None, f"the run exited ({proc.returncode}) before its first checkpoint:\n" \
                                        f"{log_path.read_text()[-4000:]}"
            assert time.monotonic() < deadline, "no checkpoint after 600 s"
            time.sleep(0.2)
        os.kill(cluster.raylet_pid("worker"), signal.SIGKILL)
        killed = time.monotonic()
        proc.wait(timeout=120)
        stopped_after = time.monotonic() - killed
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    text = log_path.read_text()
    assert proc.returncode == 1, f"the run was not stopped by the lost node (rc {proc.returncode}):\n{text[-4000:]}"
    error = next(line for line in text.splitlines() if line.startswith("error: the run stopped"))
    assert cluster.worker.ip in error and "died" in error, error
    assert stopped_after < 30, f"the run took {stopped_after:.1f} s to stop after its node was lost"
    print(f"lost node detected after {stopped_after:.1f} s: {error}")

    cluster.restart_worker()
    resumed = _on_cluster(cluster, cmd)
    assert resumed.returncode == 0, resumed.stderr[-6000:]
    assert "resumed from" in resumed.stderr
    rows = _metrics(out)
    assert [r["step"] for r in rows] == list(range(1, 9)), "steps lost or repeated after the resume"
    _assert_same_steps(rows, reference, STEPS)  # constant LR: steps 1..4 do not depend on total_steps


def test_unreachable_rendezvous_fails_within_the_startup_timeout_naming_the_address(cluster, tmp_path):
    bad = "10.231.0.99"  # inside the cluster's subnet, but no node has it
    proc = _on_cluster(cluster, _train(tmp_path / "run", f"dist.master_addr={bad}", "resources.startup_timeout_s=10"),
                       timeout=300)
    assert proc.returncode == 1, proc.stderr[-4000:]
    error = next(line for line in proc.stderr.splitlines() if line.startswith("error: the run could not start"))
    assert f"{bad}:" in error and "learner rank" in error and "node 10.231.0." in error, error
    bound = re.search(r"within (\d+) ?s", error)  # the rank's own 10 s, or the driver's 10 s + 15 s margin
    assert bound and int(bound.group(1)) <= 25, error


def test_output_dir_not_shared_by_every_node_is_refused_at_start(cluster):
    out = cluster.worker.private_dir / f"run-{uuid.uuid4().hex[:8]}"  # the head sees it, the worker does not
    proc = _on_cluster(cluster, _train(out), timeout=300)
    assert proc.returncode == 1, proc.stderr[-4000:]
    error = next(line for line in proc.stderr.splitlines() if line.startswith("error: the run could not start"))
    assert f"output_dir {out} is not the same folder on every node" in error, error
    assert f"node {cluster.worker.ip}) cannot read" in error, error  # the worker's rank is named, the head's not
    assert f"node {cluster.head.ip}), " not in error and f"node {cluster.head.ip}) cannot" not in error, error
    assert not (out / "metrics.jsonl").exists()
