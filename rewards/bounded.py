"""A killable, time-bounded process pool: the one mechanism that bounds every reward computation.

    pool = BoundedPool(num_workers=2, timeout_s=5.0, memory_limit_mb=2048)
    outcomes = pool.map(fn, [(a1, b1), (a2, b2)])   # fn must be picklable (a module-level function)
    outcomes[0].status  # "ok" | "timeout" | "error";  .value on ok, .message otherwise
    pool.stats()        # {"tasks", "timeouts", "errors", "restarts"} since the pool was made

What isolation this gives, exactly:
- each task runs in a separate OS process (multiprocessing, 'spawn' context: a fresh interpreter, nothing
  inherited from a parent that has torch, CUDA or Ray threads), kept alive between calls so start-up is paid once;
- a wall-clock limit per task, measured from when the task is handed to a ready worker: a worker past its limit is
  killed with SIGKILL (no SIGALRM, so C-level hangs stop too, and callers may be any thread or a Ray actor) and a
  replacement is started at once, so the pool is back at full capacity for the next batch;
- a crash in the worker (segfault, `os._exit`, MemoryError) is an `error` outcome for that task, never an
  exception in the caller; the worker is replaced;
- optionally an address-space cap (`RLIMIT_AS`, `memory_limit_mb`) on each worker, so a runaway allocation fails
  inside the worker instead of exhausting the machine.
It is NOT a sandbox: workers run as the same user with the same file-system and network access. Verifiers must
still never execute model output.

Thread safety: `map` may be called from several threads at once (OpenRLHF calls its reward function through
`asyncio.to_thread`); each call takes idle workers from the shared set and returns them when done.
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing as mp
import os
import pickle
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any, Literal

log = logging.getLogger(__name__)

_POOLS: weakref.WeakSet = weakref.WeakSet()  # closed at interpreter exit, before multiprocessing reaps workers
_IN_WORKER = False  # set in worker processes: code that would start its own pool runs inline instead


def in_worker() -> bool:
    """True inside a BoundedPool worker (already bounded from outside: run inline, don't nest pools)."""
    return _IN_WORKER


@dataclass(frozen=True)
class Outcome:
    """What happened to one task: `ok` with its `value`, or `timeout`/`error` with a short `message`."""

    status: Literal["ok", "timeout", "error"]
    value: Any = None
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class PoolStartError(RuntimeError):
    """A worker could not start (its initializer failed or it never became ready): a set-up problem, not a task's."""


def _worker_main(conn: Connection, initializer: Callable[[], None] | None, memory_limit_mb: int | None) -> None:
    global _IN_WORKER
    _IN_WORKER = True
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it kills us on close
    try:
        if memory_limit_mb:
            import resource

            limit = int(memory_limit_mb) * 2**20
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        if initializer is not None:
            initializer()
    except BaseException as err:  # noqa: BLE001 - reported to the parent, which raises PoolStartError
        conn.send(("init_error", f"{type(err).__name__}: {err}"))
        return
    conn.send(("ready", None))
    while True:
        try:
            data = conn.recv_bytes()
        except EOFError:  # parent went away
            return
        retire = False
        try:
            task = pickle.loads(data)
            if task is None:
                return
            fn, args = task
            reply = ("ok", fn(*args))
        except MemoryError:
            reply, retire = ("error", "MemoryError (worker memory limit reached)"), True
        except BaseException as err:  # noqa: BLE001 - any failure of the task is its outcome, sent to the parent
            reply = ("error", f"{type(err).__name__}: {err}"[:500])
        try:
            conn.send((*reply, retire))
        except Exception as err:  # noqa: BLE001 - e.g. an unpicklable result
            conn.send(("error", f"result could not be sent back: {type(err).__name__}: {err}"[:500], retire))
        if retire:
            return


class _Worker:
    __slots__ = ("proc", "conn", "tasks_done")

    def __init__(self, proc, conn):
        self.proc = proc
        self.conn = conn
        self.tasks_done = 0

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(timeout=5)
        self.conn.close()


class BoundedPool:
    """`num_workers` long-lived worker processes; every task bounded by `timeout_s` of wall-clock time.

    Args:
        num_workers: worker processes (started lazily on the first `map`).
        timeout_s: default per-task limit; `map(..., timeout_s=)` overrides it per call.
        max_tasks_per_worker: recycle a worker after this many tasks (bounds slow leaks, e.g. sympy caches).
        memory_limit_mb: RLIMIT_AS per worker, or None for no cap.
        initializer: picklable callable run once in each new worker before it reports ready (imports, warm-up),
            so that cost is not charged to the first task's time limit.
        start_timeout_s: a worker not ready within this is a start failure (PoolStartError in `map`).
    """

    def __init__(self, num_workers: int = 2, timeout_s: float = 5.0, *, max_tasks_per_worker: int | None = None,
                 memory_limit_mb: int | None = None, initializer: Callable[[], None] | None = None,
                 start_timeout_s: float = 120.0):
        if num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {num_workers}")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self.num_workers = num_workers
        self.timeout_s = float(timeout_s)
        self.max_tasks_per_worker = max_tasks_per_worker
        self.memory_limit_mb = memory_limit_mb
        self.initializer = initializer
        self.start_timeout_s = start_timeout_s
        self._ctx = mp.get_context("spawn")
        self._cond = threading.Condition()
        self._idle: deque[_Worker] = deque()
        self._alive = 0  # workers started and not yet killed/retired (idle, busy or starting)
        self._started = False
        self._closed = False
        self._start_error: str | None = None
        self._stats = {"tasks": 0, "timeouts": 0, "errors": 0, "restarts": 0}
        _POOLS.add(self)

    # -- worker life cycle ------------------------------------------------------------------------------------
    def _spawn(self) -> None:
        """Start one worker; a helper thread waits for its 'ready' and then makes it idle. Caller holds _cond."""
        parent_conn, child_conn = self._ctx.Pipe(duplex=True)
        proc = self._ctx.Process(target=_worker_main, args=(child_conn, self.initializer, self.memory_limit_mb),
                                 daemon=True, name="rlvr-bounded-worker")
        proc.start()
        child_conn.close()
        self._alive += 1
        worker = _Worker(proc, parent_conn)
        threading.Thread(target=self._await_ready, args=(worker,), daemon=True).start()

    def _await_ready(self, worker: _Worker) -> None:
        error = None
        try:
            if worker.conn.poll(self.start_timeout_s):
                kind, detail = worker.conn.recv()
                error = None if kind == "ready" else f"initializer failed: {detail}"
            else:
                error = f"worker not ready after {self.start_timeout_s:.0f} s"
        except (EOFError, OSError) as err:
            error = f"worker died while starting ({type(err).__name__}, exit code {worker.proc.exitcode})"
        with self._cond:
            if error is None and not self._closed:
                self._idle.append(worker)
            else:
                self._alive -= 1
                if error is not None and not self._closed:
                    self._start_error = error
                    log.error("bounded pool: %s", error)
            self._cond.notify_all()
        if error is not None or self._closed:
            worker.kill()

    def _replace(self, worker: _Worker) -> None:
        """Kill `worker` and start a replacement (pool back at full capacity)."""
        worker.kill()
        with self._cond:
            self._alive -= 1
            self._stats["restarts"] += 1
            if not self._closed:
                self._spawn()

    def _release(self, worker: _Worker) -> None:
        worker.tasks_done += 1
        if self.max_tasks_per_worker and worker.tasks_done >= self.max_tasks_per_worker:
            try:
                worker.conn.send(None)
            except OSError:
                pass
            self._replace(worker)
            return
        with self._cond:
            if self._closed:
                self._alive -= 1
            else:
                self._idle.append(worker)
            self._cond.notify_all()
        if self._closed:
            worker.kill()

    def _ensure_started(self) -> None:
        with self._cond:
            if self._closed:
                raise RuntimeError("BoundedPool is closed")
            if not self._started:
                self._started = True
                for _ in range(self.num_workers):
                    self._spawn()

    # -- the public API ---------------------------------------------------------------------------------------
    def map(self, fn: Callable, args_list: Sequence[tuple], *, timeout_s: float | None = None) -> list[Outcome]:
        """Run `fn(*args)` for each args tuple; one Outcome per task, in order. Never raises for a task's failure
        (timeouts, exceptions, crashes are outcomes); raises PoolStartError if workers cannot start and
        TypeError if `fn`/args cannot be pickled."""
        limit = self.timeout_s if timeout_s is None else float(timeout_s)
        n = len(args_list)
        results: list[Outcome | None] = [None] * n
        if n == 0:
            return []
        self._ensure_started()
        pending = deque(range(n))
        running: dict[Connection, tuple[_Worker, int, float]] = {}
        taken: deque[tuple[_Worker, int]] = deque()
        try:
            self._drive(fn, args_list, limit, results, pending, running, taken)
        except BaseException:
            # interrupted (e.g. KeyboardInterrupt) or a task could not be pickled: give every worker back;
            # busy ones are killed since their results would otherwise arrive on the next call
            for worker, _ in taken:
                self._release_unused(worker)
            for worker, _, _ in running.values():
                self._replace(worker)
            raise
        with self._cond:
            self._stats["tasks"] += n
        return results  # type: ignore[return-value]

    def _drive(self, fn, args_list, limit, results, pending, running, taken) -> None:
        """The dispatch loop of `map`: hand out tasks, collect results, kill workers past their deadline."""
        while pending or running:
            # hand pending tasks to idle workers
            with self._cond:
                while pending and not self._idle and not running:
                    if self._start_error is not None and self._alive == 0:
                        raise PoolStartError(self._start_error)
                    if self._closed:
                        raise RuntimeError("BoundedPool was closed during map")
                    self._cond.wait(timeout=0.5)
                while pending and self._idle:
                    taken.append((self._idle.popleft(), pending.popleft()))
            while taken:
                worker, idx = taken.popleft()
                try:
                    worker.conn.send((fn, tuple(args_list[idx])))
                except (BrokenPipeError, ConnectionResetError, EOFError):
                    pending.appendleft(idx)  # the worker died while idle: replace it, retry the task elsewhere
                    self._replace(worker)
                    continue
                except Exception as err:  # pickling failed before anything was written
                    self._release_unused(worker)
                    raise TypeError(f"BoundedPool task {idx} could not be sent: {type(err).__name__}: {err}") from err
                running[worker.conn] = (worker, idx, time.monotonic() + limit)
            if not running:
                continue
            # wait for a result, the nearest deadline, or (if tasks are queued) briefly for a freed worker
            now = time.monotonic()
            wait_s = max(0.0, min(d for _, _, d in running.values()) - now)
            if pending:
                wait_s = min(wait_s, 0.05)
            for conn in wait(list(running), timeout=wait_s):
                worker, idx, _ = running.pop(conn)
                try:
                    data = conn.recv_bytes()
                except (EOFError, OSError):
                    worker.proc.join(timeout=1)
                    code = worker.proc.exitcode
                    results[idx] = Outcome("error", message=f"worker crashed (exit code {code})")
                    self._count("errors")
                    self._replace(worker)
                    continue
                try:
                    status, payload, retire = pickle.loads(data)
                except Exception as err:  # noqa: BLE001 - e.g. a result class the parent cannot import
                    status, payload, retire = "error", f"result could not be read: {type(err).__name__}: {err}", False
                if status == "ok":
                    results[idx] = Outcome("ok", value=payload)
                else:
                    results[idx] = Outcome("error", message=payload)
                    self._count("errors")
                if retire:
                    self._replace(worker)
                else:
                    self._release(worker)
            now = time.monotonic()
            for conn, (worker, idx, deadline) in list(running.items()):
                if now >= deadline:
                    del running[conn]
                    results[idx] = Outcome("timeout", message=f"timed out after {limit:g} s (worker killed)")
                    self._count("timeouts")
                    self._replace(worker)

    def _release_unused(self, worker: _Worker) -> None:
        with self._cond:
            self._idle.append(worker)
            self._cond.notify_all()

    def _count(self, key: str) -> None:
        with self._cond:
            self._stats[key] += 1

    def stats(self) -> dict[str, int]:
        """Counters since creation: tasks, timeouts, errors (exceptions and crashes), restarts (workers replaced)."""
        with self._cond:
            return dict(self._stats, workers=self._alive)

    def close(self) -> None:
        """Stop idle workers now; busy ones are killed when their `map` hands them back."""
        with self._cond:
            self._closed = True
            idle, self._idle = list(self._idle), deque()
            self._alive -= len(idle)
            self._cond.notify_all()
        for worker in idle:
            try:
                worker.conn.send(None)
            except OSError:
                pass
            worker.proc.join(timeout=1)
            worker.kill()

    def __enter__(self) -> BoundedPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):  # best effort; daemon workers also die with the parent
        if not getattr(self, "_closed", True):
            try:
                self.close()
            except Exception:  # noqa: BLE001 - interpreter shutdown: nothing useful to report
                pass


@atexit.register
def _close_all_pools() -> None:
    for pool in list(_POOLS):
        pool.close()


def default_workers() -> int:
    """Worker count for shared pools: $RLVR_REWARD_WORKERS, else min(4, CPU count)."""
    env = os.environ.get("RLVR_REWARD_WORKERS")
    if env:
        return max(1, int(env))
    return max(1, min(4, os.cpu_count() or 1))
