"""A killable, time-bounded process pool: the one mechanism that bounds every reward computation.

    pool = BoundedPool(num_workers=2, timeout_s=5.0, memory_limit_mb=2048)
    outcomes = pool.map(fn, [(a1, b1), (a2, b2)])   # fn must be picklable (a function of an importable module)
    outcomes = pool.map(fn, args_list, warm_ups=[load_model, None])  # per-task warm-up, once per worker
    outcomes[0].status  # "ok" | "timeout" | "error";  .value on ok, .message otherwise
    pool.stats()        # {"tasks", "timeouts", "errors", "restarts"} since the pool was made

What isolation this gives, exactly:
- each task runs in a separate OS process: a fresh interpreter started with `python -c` (never fork, so nothing
  is inherited from a parent that has torch, CUDA or Ray threads), kept alive between calls so start-up is paid
  once. Unlike multiprocessing's spawn, a worker never re-imports the parent's `__main__` module, so a script
  without an `if __name__ == "__main__":` guard (TRL's quickstart style) works, and workers do not re-import what
  that script imports (torch, trl). The price: task functions must live in importable modules (a function
  defined in the script itself cannot be loaded by a worker; `rewards.scoring` refuses such verifiers up front);
- a wall-clock limit per task, measured from when the task is handed to a ready worker: a worker past its limit is
  killed with SIGKILL (no SIGALRM, so C-level hangs stop too, and callers may be any thread or a Ray actor) and a
  replacement is started at once, so the pool is back at full capacity for the next batch;
- optional per-task warm-ups (`map(..., warm_ups=)`: e.g. importing math-verify): run once per worker, before the
  task's clock starts, under their own limit (`warm_up_timeout_s`), so heavy imports are paid only by workers
  that need them and never charged to a task's time limit;
- a crash in the worker (segfault, `os._exit`, MemoryError) is an `error` outcome for that task, never an
  exception in the caller; the worker is replaced;
- optionally an address-space cap (`RLIMIT_AS`, `memory_limit_mb`) on each worker, so a runaway allocation fails
  inside the worker instead of exhausting the machine;
- a worker whose parent died exits within about a second (it watches its parent's pid).
It is NOT a sandbox: workers run as the same user with the same file-system and network access. Verifiers must
still never execute model output.

Thread safety: `map` may be called from several threads at once (OpenRLHF calls its reward function through
`asyncio.to_thread`); each call takes idle workers from the shared set and returns them when done.
"""

from __future__ import annotations

import atexit
import logging
import os
import pickle
import resource
import subprocess
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, Pipe, wait
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


# The worker's first lines: ignore Ctrl-C (the parent's to handle), take the parent's sys.path from the pipe, then
# import this module. Nothing of the parent's __main__ is imported.
_BOOTSTRAP = (
    "import signal, sys, pickle\n"
    "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
    "from multiprocessing.connection import Connection\n"
    "conn = Connection(int(sys.argv[1]))\n"
    "sys.path[:] = pickle.loads(conn.recv_bytes())\n"
    "from rewards.bounded import _worker_main\n"
    "_worker_main(conn)\n"
)


def _watch_parent(parent_pid: int) -> None:
    """Exit when the parent is gone (re-parented), so a killed driver leaves no busy workers behind."""
    while True:
        time.sleep(1.0)
        if os.getppid() != parent_pid:
            os._exit(0)


def _worker_main(conn: Connection) -> None:
    global _IN_WORKER
    _IN_WORKER = True
    try:
        _serve(conn)
    except (BrokenPipeError, ConnectionResetError, EOFError):
        return  # the parent closed the pool (or died) while we were starting or replying: nothing to report to


def _serve(conn: Connection) -> None:
    try:
        parent_pid, initializer, memory_limit_mb = pickle.loads(conn.recv_bytes())
        threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()
        if memory_limit_mb:
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
            fn, args, warm_up = task
            if warm_up is not None:
                try:
                    warm_up()
                except BaseException as err:  # noqa: BLE001 - a failed warm-up is this task's error
                    raise RuntimeError(f"warm-up {_describe(warm_up)} failed: {type(err).__name__}: {err}") from err
                conn.send(("warmed", None, False))
            reply = ("ok", fn(*args))
        except MemoryError:
            reply, retire = ("error", "MemoryError (worker memory limit reached)"), True
        except BaseException as err:  # noqa: BLE001 - any failure of the task is its outcome, sent to the parent
            reply = ("error", f"{type(err).__name__}: {err}"[:500])
        try:
            conn.send((*reply, retire))
        except (BrokenPipeError, ConnectionResetError):
            raise
        except Exception as err:  # noqa: BLE001 - e.g. an unpicklable result
            conn.send(("error", f"result could not be sent back: {type(err).__name__}: {err}"[:500], retire))
        if retire:
            return


def _describe(fn: Any) -> str:
    """A stable name for a warm-up callable (module:qualname, or the repr of a partial)."""
    module, name = getattr(fn, "__module__", None), getattr(fn, "__qualname__", None)
    return f"{module}:{name}" if module and name else repr(fn)


class _Worker:
    __slots__ = ("proc", "conn", "tasks_done", "warmed")

    def __init__(self, proc: subprocess.Popen, conn: Connection):
        self.proc = proc
        self.conn = conn
        self.tasks_done = 0
        self.warmed: set[str] = set()  # warm-ups this worker has run

    def exit_code(self, wait_s: float = 0.0) -> int | None:
        try:
            return self.proc.wait(timeout=wait_s) if wait_s else self.proc.poll()
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.exit_code(wait_s=5)
        self.conn.close()


class _MapState:
    """The book-keeping of one `map` call."""

    def __init__(self, fn: Callable, args_list: Sequence[tuple], limit: float,
                 warm_ups: Sequence[Callable[[], None] | None] | None):
        self.fn, self.args_list, self.limit, self.warm_ups = fn, args_list, limit, warm_ups
        self.results: list[Outcome | None] = [None] * len(args_list)
        self.pending: deque[int] = deque(range(len(args_list)))
        # worker connection -> (worker, task index, deadline, key of the warm-up it is running or None)
        self.running: dict[Connection, tuple[_Worker, int, float, str | None]] = {}
        self.taken: deque[tuple[_Worker, int]] = deque()


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
        warm_up_timeout_s: limit for one per-task warm-up (see `map`); past it the task is a timeout.
    """

    def __init__(self, num_workers: int = 2, timeout_s: float = 5.0, *, max_tasks_per_worker: int | None = None,
                 memory_limit_mb: int | None = None, initializer: Callable[[], None] | None = None,
                 start_timeout_s: float = 120.0, warm_up_timeout_s: float = 60.0):
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
        self.warm_up_timeout_s = float(warm_up_timeout_s)
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
        setup = pickle.dumps((os.getpid(), self.initializer, self.memory_limit_mb))
        parent_conn, child_conn = Pipe(duplex=True)
        fd = child_conn.fileno()
        try:
            proc = subprocess.Popen([sys.executable, "-c", _BOOTSTRAP, str(fd)], pass_fds=(fd,),
                                    stdin=subprocess.DEVNULL, close_fds=True)
        finally:
            child_conn.close()
        parent_conn.send_bytes(pickle.dumps(list(sys.path)))
        parent_conn.send_bytes(setup)
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
            error = f"worker died while starting ({type(err).__name__}, exit code {worker.exit_code(wait_s=1)})"
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
    def map(self, fn: Callable, args_list: Sequence[tuple], *, timeout_s: float | None = None,
            warm_ups: Sequence[Callable[[], None] | None] | None = None) -> list[Outcome]:
        """Run `fn(*args)` for each args tuple; one Outcome per task, in order. Never raises for a task's failure
        (timeouts, exceptions, crashes are outcomes); raises PoolStartError if workers cannot start and
        TypeError if `fn`/args cannot be pickled.

        `warm_ups[i]` (picklable, or None) runs in the worker before task i the first time that worker meets it,
        outside the task's time limit and under `warm_up_timeout_s` instead; a failed warm-up is task i's error.
        """
        limit = self.timeout_s if timeout_s is None else float(timeout_s)
        n = len(args_list)
        if warm_ups is not None and len(warm_ups) != n:
            raise ValueError(f"map: {n} tasks but {len(warm_ups)} warm-ups")
        if n == 0:
            return []
        self._ensure_started()
        run = _MapState(fn, args_list, limit, warm_ups)
        try:
            self._drive(run)
        except BaseException:
            # interrupted (e.g. KeyboardInterrupt) or a task could not be pickled: give every worker back;
            # busy ones are killed since their results would otherwise arrive on the next call
            for worker, _ in run.taken:
                self._release_unused(worker)
            for worker, *_ in run.running.values():
                self._replace(worker)
            raise
        with self._cond:
            self._stats["tasks"] += n
        return run.results  # type: ignore[return-value]

    def _send(self, run: _MapState, worker: _Worker, idx: int) -> bool:
        """Hand task `idx` to `worker`, with its warm-up if this worker has not run it; False if the worker was
        found dead (the task goes back to the queue)."""
        warm = run.warm_ups[idx] if run.warm_ups is not None else None
        key = _describe(warm) if warm is not None else None
        if key is not None and key in worker.warmed:
            warm, key = None, None
        try:
            worker.conn.send((run.fn, tuple(run.args_list[idx]), warm))
        except (BrokenPipeError, ConnectionResetError, EOFError):
            run.pending.appendleft(idx)  # the worker died while idle: replace it, retry the task elsewhere
            self._replace(worker)
            return False
        except Exception as err:  # pickling failed before anything was written
            self._release_unused(worker)
            raise TypeError(f"BoundedPool task {idx} could not be sent: {type(err).__name__}: {err}") from err
        budget = self.warm_up_timeout_s if key is not None else run.limit
        run.running[worker.conn] = (worker, idx, time.monotonic() + budget, key)
        return True

    def _drive(self, run: _MapState) -> None:
        """The dispatch loop of `map`: hand out tasks, collect results, kill workers past their deadline."""
        pending, running, results = run.pending, run.running, run.results
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
                    run.taken.append((self._idle.popleft(), pending.popleft()))
            while run.taken:
                worker, idx = run.taken.popleft()
                self._send(run, worker, idx)
            if not running:
                continue
            # wait for a message, the nearest deadline, or (if tasks are queued) briefly for a freed worker
            now = time.monotonic()
            wait_s = max(0.0, min(entry[2] for entry in running.values()) - now)
            if pending:
                wait_s = min(wait_s, 0.05)
            for conn in wait(list(running), timeout=wait_s):
                worker, idx, _, warming = running.pop(conn)
                try:
                    data = conn.recv_bytes()
                except (EOFError, OSError):
                    code = worker.exit_code(wait_s=1)
                    results[idx] = Outcome("error", message=f"worker crashed (exit code {code})")
                    self._count("errors")
                    self._replace(worker)
                    continue
                try:
                    status, payload, retire = pickle.loads(data)
                except Exception as err:  # noqa: BLE001 - e.g. a result class the parent cannot import
                    status, payload, retire = "error", f"result could not be read: {type(err).__name__}: {err}", False
                if status == "warmed":  # the task itself starts now: its clock too
                    worker.warmed.add(warming)
                    running[conn] = (worker, idx, time.monotonic() + run.limit, None)
                    continue
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
            for conn, (worker, idx, deadline, warming) in list(running.items()):
                if now >= deadline:
                    del running[conn]
                    what = (f"warm-up {warming} timed out after {self.warm_up_timeout_s:g} s" if warming
                            else f"timed out after {run.limit:g} s")
                    results[idx] = Outcome("timeout", message=f"{what} (worker killed)")
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
            worker.exit_code(wait_s=1)
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
