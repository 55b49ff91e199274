"""A real local Ray head for integration tests, on free loopback ports, stopped by its own PID.

    from ray_cluster import local_ray_head          # tests/rlvr/ is on sys.path (pytest puts a test module's folder there)

    with local_ray_head(num_cpus=2) as head:
        subprocess.run(["ray", "job", "submit", "--address", head.dashboard_url, ...], env=head.env)

or, for a whole test module:

    @pytest.fixture(scope="module")
    def ray_head():
        with local_ray_head(num_cpus=2) as head:
            yield head

Jobs: `submit_job(head, [...entrypoint], working_dir=REPO, submission_id=...)` runs the `ray job submit` CLI;
`wait_for_job`, `job_status`, `job_logs`, `stop_job` poll, read and stop through Ray's job REST API.

Why each setting (../shared/ENVIRONMENT.md, "Ray"):
- `ray start --head --block` in its own session, every port explicit and free (GCS, dashboard, client server,
  node manager, object manager, dashboard agent, runtime-env agent, metrics, a worker port range), the client
  server port outside the worker range, its own short `--temp-dir`: several heads (other engineers' tests) can
  run on one machine without colliding.
- `RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0` + `--node-ip-address 127.0.0.1`: bind loopback, not eth0.
- Token authentication on (`RAY_AUTH_MODE=token`, a fresh random `RAY_AUTH_TOKEN` per head, in `head.env` for
  the head and its `ray` CLI clients, and as a bearer header in `job_client`): an unauthenticated Ray cluster is
  remote code execution for anyone who reaches its ports (CVE-2023-48022). `start_head(auth=False)` for none.
- Stop: SIGTERM to the `ray start --block` PID, which tears its head down; wait for every process of that head
  (its process group) to exit; SIGKILL that group only if it does not drain in time. Never `ray stop`: it kills
  every Ray process on the machine, including other people's.
- The head is started with this interpreter's bin folder first on PATH, so a job's entrypoint (`rlvr ...`,
  `python ...`) runs in the same virtual environment.
"""

from __future__ import annotations

import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

HOST = "127.0.0.1"
PORT_NAMES = ("gcs", "dashboard", "client_server", "node_manager", "object_manager", "agent_listen", "agent_grpc",
              "runtime_env_agent", "metrics")
NUM_WORKER_PORTS = 40


class RayHeadError(RuntimeError):
    pass


@dataclass
class RayHead:
    pid: int  # the `ray start --head --block` process (its process group id too)
    ports: dict[str, int]
    worker_ports: tuple[int, int]
    temp_dir: Path
    log_path: Path
    env: dict[str, str] = field(repr=False, default_factory=dict)  # environment for `ray` CLI clients
    proc: subprocess.Popen | None = field(repr=False, default=None)
    token: str | None = field(repr=False, default=None)  # RAY_AUTH_TOKEN (None: authentication off)

    @property
    def gcs_address(self) -> str:
        return f"{HOST}:{self.ports['gcs']}"

    @property
    def dashboard_url(self) -> str:
        """What `ray job submit --address` takes."""
        return f"http://{HOST}:{self.ports['dashboard']}"

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def pick_ports(rng: random.Random | None = None) -> tuple[dict[str, int], tuple[int, int]]:
    """A block of free loopback ports: one per name in PORT_NAMES, then a worker range right after them."""
    rng = rng or random.Random()
    need = len(PORT_NAMES) + NUM_WORKER_PORTS
    for _ in range(200):
        base = rng.randrange(20000, 60000 - need)
        if all(_port_free(p) for p in range(base, base + need)):
            ports = dict(zip(PORT_NAMES, range(base, base + len(PORT_NAMES))))
            lo = base + len(PORT_NAMES)
            return ports, (lo, lo + NUM_WORKER_PORTS - 1)
    raise RayHeadError(f"no block of {need} free loopback ports found")


def new_token() -> str:
    """A fresh cluster token (Ray's token authentication: a static shared secret)."""
    return secrets.token_hex(32)


def client_env(extra: dict[str, str] | None = None, token: str | None = None) -> dict[str, str]:
    """Environment for the head and for `ray` CLI clients: this venv first on PATH, loopback, token
    authentication with `token` (None: authentication disabled)."""
    env = dict(os.environ)
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    env.pop("RAY_AUTH_TOKEN_PATH", None)
    if token:
        env["RAY_AUTH_MODE"], env["RAY_AUTH_TOKEN"] = "token", token
    else:
        env["RAY_AUTH_MODE"] = "disabled"
        env.pop("RAY_AUTH_TOKEN", None)
    env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    env.pop("RAY_ADDRESS", None)  # never talk to some other cluster by accident
    env.update(extra or {})
    return env


def _ray_cli() -> str:
    exe = Path(sys.executable).parent / "ray"
    return str(exe) if exe.exists() else (shutil.which("ray") or "ray")


def _group_alive(pgid: int) -> list[int]:
    """PIDs still in process group `pgid` (Linux /proc)."""
    alive = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":  # fields[0] = state, [2] = pgrp
            alive.append(int(entry.name))
    return alive


def stop_head(head: RayHead, timeout: float = 30.0) -> None:
    """SIGTERM the head's `ray start --block` process, wait for its whole process group to drain, SIGKILL the
    group (only it) after `timeout`."""
    try:
        os.kill(head.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _group_alive(head.pid):
        time.sleep(0.25)
    leftover = _group_alive(head.pid)
    if leftover:
        try:
            os.killpg(head.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        time.sleep(1.0)
    if head.proc is not None:
        try:
            head.proc.wait(timeout=10)  # reap it
        except subprocess.TimeoutExpired:
            pass
    shutil.rmtree(head.temp_dir, ignore_errors=True)


def _job_list_works(head: RayHead) -> bool:
    proc = subprocess.run([_ray_cli(), "job", "list", "--address", head.dashboard_url], env=head.env,
                          capture_output=True, text=True, timeout=60)
    return proc.returncode == 0


def start_head(num_cpus: int = 2, *, ready_timeout: float = 120.0, extra_env: dict[str, str] | None = None,
               log_dir: Path | None = None, auth: bool = True) -> RayHead:
    """Start a head (token authentication on unless `auth=False`) and wait until `ray job list` answers on its
    dashboard. Raises RayHeadError with the log."""
    ports, (wlo, whi) = pick_ports()
    temp_dir = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))  # short: Ray's unix socket paths must stay < 108
    log_path = (Path(log_dir) if log_dir else temp_dir) / "ray-head.log"
    token = new_token() if auth else None
    env = client_env(extra_env, token)
    cmd = [
        _ray_cli(), "start", "--head", "--block", "--disable-usage-stats",
        "--node-ip-address", HOST, "--port", str(ports["gcs"]),
        "--dashboard-host", HOST, "--dashboard-port", str(ports["dashboard"]), "--include-dashboard", "true",
        "--ray-client-server-port", str(ports["client_server"]),
        "--node-manager-port", str(ports["node_manager"]), "--object-manager-port", str(ports["object_manager"]),
        "--dashboard-agent-listen-port", str(ports["agent_listen"]),
        "--dashboard-agent-grpc-port", str(ports["agent_grpc"]),
        "--runtime-env-agent-port", str(ports["runtime_env_agent"]),
        "--metrics-export-port", str(ports["metrics"]),
        "--min-worker-port", str(wlo), "--max-worker-port", str(whi),
        "--num-cpus", str(num_cpus), "--num-gpus", "0", "--temp-dir", str(temp_dir),
    ]
    log_file = open(log_path, "w")  # noqa: SIM115 - the child writes to it for its whole life
    proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    log_file.close()
    head = RayHead(pid=proc.pid, ports=ports, worker_ports=(wlo, whi), temp_dir=temp_dir, log_path=log_path,
                   env=env, proc=proc, token=token)
    deadline = time.monotonic() + ready_timeout
    try:
        while True:
            if proc.poll() is not None:
                raise RayHeadError(f"`ray start --head` exited with {proc.returncode} before it was ready:\n"
                                   f"{head.log_tail()}")
            if _job_list_works(head):
                return head
            if time.monotonic() > deadline:
                raise RayHeadError(f"Ray head not ready after {ready_timeout:.0f} s:\n{head.log_tail()}")
            time.sleep(1.0)
    except BaseException:
        stop_head(head)
        raise


# ---- jobs (the `ray job` CLI, as a user would run it; status through the SDK for reliable polling) ----

# Never uploaded with --working-dir (Ray also skips .git/.venv and what .gitignore lists).
WORKING_DIR_EXCLUDES = [".venv", ".git", "runs", "outputs", "build", "**/__pycache__", ".pytest_cache",
                        ".ruff_cache", "*.egg-info"]


def submit_job(head: RayHead, entrypoint: list[str], *, working_dir: str | Path, submission_id: str,
               wait: bool = True, timeout: float = 900.0, log_path: Path | None = None,
               excludes: list[str] | None = None) -> subprocess.CompletedProcess:
    """`ray job submit --address <dashboard> --working-dir DIR --runtime-env-json {excludes} -- ENTRYPOINT`.

    With wait=True the CLI tails the job's logs until it ends and exits 0 only when the job SUCCEEDED; the output
    goes to `log_path` (when given) and into the returned object's stdout."""
    import json

    cmd = [_ray_cli(), "job", "submit", "--address", head.dashboard_url, "--submission-id", submission_id,
           "--working-dir", str(working_dir),
           "--runtime-env-json", json.dumps({"excludes": excludes or WORKING_DIR_EXCLUDES})]
    if not wait:
        cmd.append("--no-wait")
    proc = subprocess.run([*cmd, "--", *entrypoint], env=head.env, capture_output=True, text=True, timeout=timeout)
    if log_path is not None:
        Path(log_path).write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
    return proc


def job_client(head: RayHead):
    from ray.job_submission import JobSubmissionClient

    headers = {"Authorization": f"Bearer {head.token}"} if head.token else None
    return JobSubmissionClient(head.dashboard_url, headers=headers)


def job_status(head: RayHead, submission_id: str) -> str:
    return str(job_client(head).get_job_status(submission_id).value)


def job_logs(head: RayHead, submission_id: str, chars: int = 6000) -> str:
    try:
        return job_client(head).get_job_logs(submission_id)[-chars:]
    except (RuntimeError, OSError) as err:  # only decorates a failure message
        return f"<could not read the job's logs: {err}>"


def stop_job(head: RayHead, submission_id: str, timeout: float = 120.0) -> str:
    """What `ray job stop` does (SIGTERM to the entrypoint, SIGKILL later), through the same REST API without the
    CLI's start-up second; waits for a terminal status and returns it."""
    job_client(head).stop_job(submission_id)
    return wait_for_job(head, submission_id, timeout=timeout)


def wait_for_job(head: RayHead, submission_id: str, timeout: float = 900.0) -> str:
    """Poll until the job is SUCCEEDED, FAILED or STOPPED; returns that status (RayHeadError on timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        status = job_status(head, submission_id)
        if status in ("SUCCEEDED", "FAILED", "STOPPED"):
            return status
        if time.monotonic() > deadline:
            raise RayHeadError(f"job {submission_id} still {status} after {timeout:.0f} s:\n"
                               f"{job_logs(head, submission_id)}")
        time.sleep(0.5)


@contextmanager
def local_ray_head(num_cpus: int = 2, **kwargs) -> Iterator[RayHead]:
    """Context manager: a started head (see `start_head`), always stopped by PID on exit."""
    head = start_head(num_cpus, **kwargs)
    try:
        yield head
    finally:
        stop_head(head)

