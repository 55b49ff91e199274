"""BoundedPool: results in order, timeouts kill and replace the worker, crashes are outcomes, threads are safe."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import bounded_tasks as t
import pytest

from rewards.bounded import BoundedPool, PoolStartError


@pytest.fixture(scope="module")
def pool():
    p = BoundedPool(2, timeout_s=2.0, memory_limit_mb=1024)
    yield p
    p.close()


def test_results_in_order(pool):
    out = pool.map(t.square, [(i,) for i in range(50)])
    assert [o.value for o in out] == [i * i for i in range(50)]
    assert all(o.ok for o in out)


def test_c_level_hang_is_killed_and_pool_recovers(pool):
    before = pool.stats()
    out = pool.map(t.hang_in_c, [()])
    assert out[0].status == "timeout" and "killed" in out[0].message
    after = pool.stats()
    assert after["timeouts"] == before["timeouts"] + 1
    assert after["restarts"] == before["restarts"] + 1
    # back at full capacity: two live workers, both serving tasks in their own processes
    assert pool.stats()["workers"] == 2
    out = pool.map(t.sleep_then, [(i, 0.2) for i in range(4)])
    assert [o.value for o in out] == [0, 1, 2, 3]
    assert os.getpid() not in {o.value for o in pool.map(t.pid, [()] * 4)}


def test_timeout_only_hits_the_slow_task(pool):
    out = pool.map(t.sleep_then, [(1, 0.0), (2, 30.0), (3, 0.0)])
    assert [o.status for o in out] == ["ok", "timeout", "ok"]
    assert out[0].value == 1 and out[2].value == 3


def test_exceptions_and_crashes_are_outcomes(pool):
    raised, crashed, unpicklable = pool.map(t.boom, [("bad",)])[0], pool.map(t.hard_exit, [(3,)])[0], \
        pool.map(t.unpicklable_result, [()])[0]
    assert raised.status == "error" and "ValueError: bad" in raised.message
    assert crashed.status == "error" and "exit code 3" in crashed.message
    assert unpicklable.status == "error" and "could not be sent back" in unpicklable.message
    unreadable = pool.map(t.parent_cannot_unpickle, [()])[0]
    assert unreadable.status == "error" and "could not be read" in unreadable.message
    assert pool.map(t.square, [(7,)])[0].value == 49


def test_memory_cap_turns_runaway_allocation_into_an_error(pool):
    out = pool.map(t.allocate, [(4096,)])[0]
    assert out.status == "error" and "MemoryError" in out.message
    assert pool.map(t.allocate, [(8,)])[0].value == 8 * 2**20


def test_unpicklable_task_raises_type_error_in_caller(pool):
    with pytest.raises(TypeError, match="could not be sent"):
        pool.map(lambda: 1, [()])
    assert pool.map(t.square, [(3,)])[0].value == 9
    with pytest.raises(TypeError, match="task 2 could not be sent"):
        pool.map(t.sleep_then, [(1, 0.5), (2, 0.5), (lambda: 0, 0)])
    # no worker was lost: full capacity, both serve the next batch
    assert pool.stats()["workers"] == 2
    assert [o.value for o in pool.map(t.square, [(i,) for i in range(6)])] == [i * i for i in range(6)]


def test_concurrent_maps_from_threads(pool):
    def job(k):
        return [o.value for o in pool.map(t.square, [(k * 100 + i,) for i in range(20)])]

    with ThreadPoolExecutor(8) as ex:
        results = list(ex.map(job, range(8)))
    assert results == [[(k * 100 + i) ** 2 for i in range(20)] for k in range(8)]


def test_max_tasks_per_worker_recycles():
    with BoundedPool(1, timeout_s=5.0, max_tasks_per_worker=2) as p:
        pids = [p.map(t.pid, [()])[0].value for _ in range(4)]
    assert pids[0] == pids[1] and pids[2] == pids[3] and pids[1] != pids[2]


def test_failing_initializer_is_a_start_error():
    with BoundedPool(1, timeout_s=5.0, initializer=t.boom_init) as p, pytest.raises(PoolStartError, match="init"):
        p.map(t.square, [(1,)])
