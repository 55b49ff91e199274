"""One writer per run folder: `RunLock(output_dir)` is held by the process that runs a stage, for the whole run.

The lock is the file `output_dir/.rlvr-run.lock`, created with O_EXCL and holding who owns it: process id, host
name, the process's start time (so a reused PID is not mistaken for the owner), the command and when it started.
A second run on the same folder gets `RunLockedError` naming the holder (the CLIs exit 2). A lock left by a run
that died (same host, that process gone or a different process under its PID) is stale: it is taken over with a
warning. A lock from another host cannot be checked from here; the message says to delete the file if that run is
gone. Taking over a stale lock is serialised by an flock on `.rlvr-run.lock.guard`, so two starters cannot both
take it.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from core.logging import get_logger

log = get_logger(__name__)

LOCK_FILE = ".rlvr-run.lock"


class RunLockedError(RuntimeError):
    """Another run holds the folder (an input error: exit code 2)."""


def _process_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22), None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _me() -> dict[str, Any]:
    return {"pid": os.getpid(), "host": socket.gethostname(), "start": _process_start(os.getpid()),
            "since": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "command": " ".join(sys.argv)[:500]}


class RunLock:
    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self._held = False

    def holder(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}  # being written right now, or garbled: treated as held by an unknown run

    def _stale(self, info: dict[str, Any]) -> bool:
        if not info or info.get("host") != socket.gethostname() or not isinstance(info.get("pid"), int):
            return False
        pid = info["pid"]
        if not _alive(pid):
            return True
        start = _process_start(pid)
        return info.get("start") is not None and start is not None and start != info["start"]

    def acquire(self) -> RunLock:
        self.folder.mkdir(parents=True, exist_ok=True)
        me = _me()
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                info = self.holder()
                if info is None:
                    continue  # released between our two looks
                if info.get("pid") == me["pid"] and info.get("host") == me["host"] and info.get("start") == me["start"]:
                    raise RunLockedError(f"{self.folder} is already in use by this process (pid {me['pid']})") from None
                if self._take_over_if_stale(info):
                    continue
                raise RunLockedError(_held_message(self.folder, self.path, info)) from None
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(me))
            self._held = True
            return self
        raise RunLockedError(f"{self.folder}: could not take the run lock {self.path} (it keeps changing hands)")

    def _take_over_if_stale(self, info: dict[str, Any]) -> bool:
        with open(self.path.with_name(LOCK_FILE + ".guard"), "a") as guard:
            fcntl.flock(guard, fcntl.LOCK_EX)
            try:
                if self.holder() != info:
                    return True  # released or taken meanwhile: look again
                if not self._stale(info):
                    return False
                os.unlink(self.path)
                log.warning("took over the run lock of %s: its holder (pid %s on %s, since %s) is no longer running",
                            self.folder, info.get("pid"), info.get("host"), info.get("since"))
                return True
            finally:
                fcntl.flock(guard, fcntl.LOCK_UN)

    def release(self) -> None:
        if self._held:
            self._held = False
            info = self.holder()
            if info and info.get("pid") == os.getpid():
                self.path.unlink(missing_ok=True)

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _held_message(folder: Path, path: Path, info: dict[str, Any]) -> str:
    if not info:
        return f"{folder} is in use by another run (lock file {path} is being written or unreadable)"
    where = f"pid {info.get('pid')} on {info.get('host')}, since {info.get('since')}"
    hint = ("" if info.get("host") == socket.gethostname() else
            f"; if that run is gone, delete {path}")
    return f"{folder} is in use by another run ({where}: {info.get('command', '?')}){hint}"
