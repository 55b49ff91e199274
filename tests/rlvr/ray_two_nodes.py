"""A real two-node Ray cluster on one machine, for integration tests: two network namespaces joined by a veth pair,
a Ray head in one and a Ray worker in the other, each on its own address, so that each node's 127.0.0.1 is its
own and code that assumes one machine fails here as it would on a real cluster (../shared/ENVIRONMENT.md).

    from ray_two_nodes import two_node_cluster, netns_unavailable   # tests/rlvr/ is on sys.path

    reason = netns_unavailable()            # None, or why the cluster cannot be built (not root, no `ip netns`)
    with two_node_cluster(head_cpus=3, worker_cpus=3) as cluster:
        cluster.run("head", ["python", "-m", "rlvr.cli", "train", ...], env={"RAY_ADDRESS": cluster.address})

Layout: namespace `<prefix>h` holds `10.231.0.1` (the head: GCS, dashboard, a raylet), namespace `<prefix>w` holds
`10.231.0.2` (a worker raylet); a veth pair joins them. Clients (the driver, `ray job submit`) run inside the head's
namespace through `cluster.run/popen("head", ...)`: the host's own network never sees these addresses. Both
namespaces share this machine's filesystem, so every folder is "shared" between the two nodes.

Teardown, always and only of what this harness made: SIGTERM to each `ray start --block` process (its own
session and process group), SIGKILL to that group if it does not drain, then `ip netns del` (which removes the
veth pair). Never `ray stop`.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ray_cluster import _group_alive, _ray_cli, client_env, new_token

SUBNET = "10.231.0"
GCS_PORT = 6379  # ports are per namespace: no clash with any other Ray on this machine
DASHBOARD_PORT = 8265


class ClusterError(RuntimeError):
    pass


def netns_unavailable() -> str | None:
    """Why a two-namespace cluster cannot be built here (None when it can)."""
    if sys.platform != "linux":
        return f"network namespaces need Linux (this is {sys.platform})"
    if os.geteuid() != 0:
        return "building network namespaces needs root (ip netns add)"
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed"
    probe = f"rlvrprobe{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"`ip netns add` failed: {made.stderr.strip() or made.returncode}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


@dataclass
class Node:
    role: str  # "head" | "worker"
    netns: str
    ip: str
    num_cpus: int
    temp_dir: Path
    log_path: Path
    private_dir: Path | None = None  # a folder this node sees as its own empty tmpfs: "not shared" with the other
    proc: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None


@dataclass
class TwoNodeCluster:
    head: Node
    worker: Node
    env: dict[str, str] = field(repr=False, default_factory=dict)
    token: str | None = field(repr=False, default=None)  # RAY_AUTH_TOKEN of the cluster (None: authentication off)

    @property
    def address(self) -> str:
        """The GCS address: what RAY_ADDRESS / `ray start --address` take."""
        return f"{self.head.ip}:{GCS_PORT}"

    @property
    def dashboard_url(self) -> str:
        """What `ray job submit --address` takes."""
        return f"http://{self.head.ip}:{DASHBOARD_PORT}"

    def node(self, role: str) -> Node:
        return {"head": self.head, "worker": self.worker}[role]

    def _cmd(self, role: str, cmd: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.node(role).netns, *cmd]

    def _env(self, env: dict[str, str] | None) -> dict[str, str]:
        return {**self.env, **(env or {})}

    def run(self, role: str, cmd: list[str], *, env: dict[str, str] | None = None, timeout: float = 600,
            cwd: str | Path | None = None) -> subprocess.CompletedProcess:
        """Run `cmd` inside node `role`'s namespace (as a process of that node) and wait for it."""
        return subprocess.run(self._cmd(role, cmd), env=self._env(env), capture_output=True, text=True,
                              timeout=timeout, cwd=cwd)

    def popen(self, role: str, cmd: list[str], *, env: dict[str, str] | None = None, cwd: str | Path | None = None,
              stdout=None) -> subprocess.Popen:
        """Start `cmd` inside node `role`'s namespace in its own session (stop it with os.killpg(p.pid, ...))."""
        return subprocess.Popen(self._cmd(role, cmd), env=self._env(env), cwd=cwd, start_new_session=True,
                                stdout=stdout if stdout is not None else subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                text=True)

    # ---- nodes ----
    def start_node(self, role: str) -> None:
        node = self.node(role)
        node.temp_dir.mkdir(parents=True, exist_ok=True)
        args = [_ray_cli(), "start", "--block", "--disable-usage-stats", "--node-ip-address", node.ip,
                "--num-cpus", str(node.num_cpus), "--num-gpus", "0", "--object-store-memory", str(512 * 2**20),
                "--temp-dir", str(node.temp_dir)]
        if role == "head":
            args += ["--head", "--port", str(GCS_PORT), "--dashboard-host", node.ip, "--dashboard-port",
                     str(DASHBOARD_PORT), "--include-dashboard", "true"]
        else:
            args += ["--address", self.address]
        if node.private_dir is not None:  # `ip netns exec` runs in its own mount namespace: the tmpfs stays there
            args = ["sh", "-c", 'mount -t tmpfs rlvr-private "$0" && exec "$@"', str(node.private_dir), *args]
        log = open(node.log_path, "a")  # noqa: SIM115 - the child writes to it for its whole life
        node.proc = subprocess.Popen(self._cmd(role, args), env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        log.close()

    def stop_node(self, role: str, timeout: float = 30.0) -> None:
        node = self.node(role)
        if node.proc is None:
            return
        _stop_group(node.proc, timeout)
        node.proc = None

    def raylet_pid(self, role: str) -> int:
        node = self.node(role)
        if node.proc is None:
            raise ClusterError(f"{role} node is not running")
        for pid in _group_alive(node.proc.pid):
            try:
                exe = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
            except OSError:
                continue
            if exe.endswith(b"/raylet"):
                return pid
        raise ClusterError(f"no raylet process in the {role} node's process group {node.proc.pid}")

    def alive_nodes(self, timeout: float = 60) -> list[str]:
        """IPs of the nodes the GCS reports alive (asked from inside the head's namespace)."""
        probe = ("import ray; ray.init(address=%r, logging_level='ERROR', log_to_driver=False); "
                 "print('ALIVE:' + ' '.join(sorted(n['NodeManagerAddress'] for n in ray.nodes() if n['Alive'])))")
        proc = self.run("head", [sys.executable, "-c", probe % self.address], timeout=timeout)
        line = next((x for x in proc.stdout.splitlines() if x.startswith("ALIVE:")), None)
        return line.removeprefix("ALIVE:").split() if proc.returncode == 0 and line else []

    def wait_for_nodes(self, ips: list[str], timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            for node in (self.head, self.worker):
                if node.proc is not None and node.proc.poll() is not None:
                    raise ClusterError(f"`ray start` of the {node.role} exited with {node.proc.returncode}:\n"
                                       f"{_tail(node.log_path)}")
            alive = self.alive_nodes()
            if all(ip in alive for ip in ips):
                return
            if time.monotonic() > deadline:
                raise ClusterError(f"nodes {ips} not all alive after {timeout:.0f} s (alive: {alive}):\n"
                                   f"head log:\n{_tail(self.head.log_path)}\nworker log:\n{_tail(self.worker.log_path)}")
            time.sleep(1.0)

    def listening_sockets(self, role: str) -> list[tuple[str, str]]:
        """(local address, owning process name) of every listening TCP socket in node `role`'s network namespace
        (`ss -ltnp` run there: the namespace holds only this cluster's processes)."""
        proc = self.run(role, ["ss", "-ltnpH"], timeout=60)
        if proc.returncode != 0:
            raise ClusterError(f"`ss -ltnp` failed on the {role} node: {proc.stderr.strip()}")
        out = []
        for line in proc.stdout.splitlines():
            fields = line.split()
            if len(fields) < 4:
                continue
            names = re.findall(r'\("([^"]+)"', line)
            out.append((fields[3], names[0] if names else "?"))
        return out

    def restart_worker(self, timeout: float = 120.0) -> None:
        """Bring the worker node back (after it was stopped or lost its raylet) and wait until it is alive."""
        self.stop_node("worker")
        self.start_node("worker")
        self.wait_for_nodes([self.head.ip, self.worker.ip], timeout)


def _stop_group(proc: subprocess.Popen, timeout: float) -> None:
    try:
        os.kill(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _group_alive(proc.pid):
        time.sleep(0.25)
    if _group_alive(proc.pid):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        time.sleep(1.0)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


def _tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def _ip(*args: str) -> None:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise ClusterError(f"`ip {' '.join(args)}` failed: {proc.stderr.strip()}")


def _make_network(prefix: str) -> tuple[str, str]:
    """Two namespaces joined by a veth pair, loopback up in each. Returns the namespace names."""
    ns_h, ns_w = f"{prefix}h", f"{prefix}w"
    veth_h, veth_w = f"{prefix}vh", f"{prefix}vw"  # interface names: at most 15 characters
    _ip("netns", "add", ns_h)
    try:
        _ip("netns", "add", ns_w)
        _ip("link", "add", veth_h, "type", "veth", "peer", "name", veth_w)
        _ip("link", "set", veth_h, "netns", ns_h)
        _ip("link", "set", veth_w, "netns", ns_w)
        for ns, dev, host in ((ns_h, veth_h, 1), (ns_w, veth_w, 2)):
            _ip("-n", ns, "addr", "add", f"{SUBNET}.{host}/24", "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
    except BaseException:
        _delete_network(ns_h, ns_w)
        raise
    return ns_h, ns_w


def _delete_network(*namespaces: str) -> None:
    for ns in namespaces:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@contextmanager
def two_node_cluster(head_cpus: int = 3, worker_cpus: int = 3, *, ready_timeout: float = 180.0,
                     extra_env: dict[str, str] | None = None, auth: bool = True) -> Iterator[TwoNodeCluster]:
    """Build the namespaces, start head then worker, wait until the GCS reports both alive; tear all down.
    Token authentication is on (one fresh token for both nodes and every client: `cluster.env`) unless
    `auth=False`; `cluster.token` is it.
    `cluster.worker.private_dir` is a folder the head sees as a normal folder and the worker as its own empty
    one (a tmpfs mounted over it in the worker's mount namespace): a folder that is *not* shared."""
    reason = netns_unavailable()
    if reason:
        raise ClusterError(reason)
    prefix = f"rv{os.getpid() % 100000}"
    root = Path(tempfile.mkdtemp(prefix="r2n", dir="/tmp"))  # short: Ray's socket paths must stay < 108 chars
    ns_h, ns_w = _make_network(prefix)
    token = new_token() if auth else None
    env = client_env({"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", **(extra_env or {})}, token)
    env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)  # each node binds its own namespace's address
    for name in ("GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME"):  # e.g. left by an in-process group of an earlier test:
        env.pop(name, None)  # an interface of this machine, absent in the nodes' namespaces
    cluster = TwoNodeCluster(
        head=Node("head", ns_h, f"{SUBNET}.1", head_cpus, root / "h", root / "head.log"),
        worker=Node("worker", ns_w, f"{SUBNET}.2", worker_cpus, root / "w", root / "worker.log",
                    private_dir=root / "private"), env=env, token=token)
    cluster.worker.private_dir.mkdir()
    try:
        cluster.start_node("head")
        cluster.wait_for_nodes([cluster.head.ip], ready_timeout)
        cluster.start_node("worker")
        cluster.wait_for_nodes([cluster.head.ip, cluster.worker.ip], ready_timeout)
        yield cluster
    finally:
        cluster.stop_node("worker")
        cluster.stop_node("head")
        _delete_network(ns_h, ns_w)
        shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    """`python tests/rlvr/ray_two_nodes.py [--head-cpus N] [--worker-cpus N] -- COMMAND ...`: build a two-node cluster,
    run COMMAND on the head node with RAY_ADDRESS and RAY_DASHBOARD_URL set (its words joined into one `sh -c`
    string, so `$RAY_DASHBOARD_URL` expands there), print its exit status and wall time, tear the cluster down.
    Needs root."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--head-cpus", type=int, default=3)
    parser.add_argument("--worker-cpus", type=int, default=3)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given")
    with two_node_cluster(args.head_cpus, args.worker_cpus) as cluster:
        print(f"cluster: head {cluster.head.ip} ({args.head_cpus} CPUs), worker {cluster.worker.ip} "
              f"({args.worker_cpus} CPUs); RAY_ADDRESS={cluster.address}", flush=True)
        start = time.monotonic()
        proc = subprocess.Popen(cluster._cmd("head", ["sh", "-c", " ".join(command)]),
                                env=cluster._env({"RAY_ADDRESS": cluster.address,
                                                  "RAY_DASHBOARD_URL": cluster.dashboard_url}))
        rc = proc.wait()
        print(f"exit {rc} after {time.monotonic() - start:.1f} s", flush=True)
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
