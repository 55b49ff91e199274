"""A local Ray started by the product: loopback only, and gone with its driver.

`start_local_ray(**ray_init_kwargs)` is `ray.init` with two additions:
- every Ray process listens on 127.0.0.1 only (the demo runs with Ray's token auth off, so nothing may listen on a
  network interface). `_node_ip_address="127.0.0.1"` alone still binds the GCS, raylet and workers to all
  interfaces; Ray binds loopback when its cluster mode is off as well (`RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`, read
  by `ray._private.ray_constants` when ray is imported, so the constant is also set for this call).
- a watchdog process ends the local Ray's processes when the driver dies without shutting Ray down (SIGKILL, OOM).
  Ray fate-shares its GCS and raylet with the driver, and workers notice the raylet's death within seconds, but its
  dashboard and runtime-env agents first try to report the raylet's death to the (dead) GCS with a hard-coded
  60 s timeout (ray._private.utils.publish_error_to_driver) and linger that long. The watchdog holds the read end
  of a pipe whose write end only the driver has; at EOF it SIGKILLs the processes `ray.init` started (checked by
  PID and start time) and every process whose RAY_RAYLET_PID names one of them.

Run as `python -m rlvr.local_ray PARENT_PID JSON` it is that watchdog.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from core.logging import get_logger

log = get_logger(__name__)

LOOPBACK = "127.0.0.1"


def _start_time(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _descendants(pid: int) -> set[int]:
    out: set[int] = set()
    stack = [pid]
    while stack:
        parent = stack.pop()
        try:
            children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
        except OSError:
            children = []
        for child in map(int, children):
            if child not in out:
                out.add(child)
                stack.append(child)
    return out


def start_local_ray(**init_kwargs) -> None:
    """`ray.init(**init_kwargs)` on 127.0.0.1, with the watchdog (see the module docstring)."""
    # lazy: the watchdog runs this module as a script (`python -m rlvr.local_ray`) and must stay small
    import ray
    import ray._private.ray_constants as ray_constants

    before = _descendants(os.getpid())
    saved_env = os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")
    saved_const = ray_constants.ENABLE_RAY_CLUSTER
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        ray.init(_node_ip_address=LOOPBACK, **init_kwargs)
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved_const
        if saved_env is None:
            os.environ.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)
        else:
            os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = saved_env
    started = {pid: _start_time(pid) for pid in _descendants(os.getpid()) - before}
    started = {pid: t for pid, t in started.items() if t is not None}
    if sys.platform.startswith("linux") and started:
        _start_watchdog(started)


def _start_watchdog(victims: dict[int, str]) -> None:
    read_end, write_end = os.pipe()  # the write end is not inheritable (PEP 446): only this process holds it
    subprocess.Popen([sys.executable, "-m", "rlvr.local_ray", str(os.getpid()), json.dumps(victims)],
                     stdin=read_end, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                     close_fds=True)
    os.close(read_end)
    _WATCHDOG_PIPES.append(write_end)  # kept open for the life of this process


_WATCHDOG_PIPES: list[int] = []


def _raylet_pid_of(pid: int) -> int | None:
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    for item in env:
        if item.startswith(b"RAY_RAYLET_PID="):
            try:
                return int(item.split(b"=", 1)[1])
            except ValueError:
                return None
    return None


def _kill_all(victims: dict[int, str]) -> None:
    alive = [pid for pid, start in victims.items() if _start_time(pid) == start]
    followers = [int(p) for p in os.listdir("/proc") if p.isdigit() and _raylet_pid_of(int(p)) in victims]
    for pid in {*alive, *followers} - {os.getpid()}:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def watch(parent: int, victims: dict[int, str]) -> None:
    """Wait for EOF on stdin (the driver is gone), then kill the Ray it started. Exits early when every process it
    watches has ended (the driver shut Ray down itself)."""
    while True:
        ready, _, _ = select.select([sys.stdin], [], [], 2.0)
        if ready and not os.read(sys.stdin.fileno(), 4096):
            _kill_all(victims)
            return
        if not any(_start_time(pid) == start for pid, start in victims.items()):
            return
        time.sleep(0.1)


if __name__ == "__main__":
    watch(int(sys.argv[1]), {int(k): v for k, v in json.loads(sys.argv[2]).items()})
