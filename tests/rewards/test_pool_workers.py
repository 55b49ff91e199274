"""How pool workers start: never by re-running the parent's `__main__` (unguarded scripts work), and each
verifier's heavy dependencies load only in workers that use it, outside the task's time limit."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import bounded_tasks as t
import faulty_verifiers  # noqa: F401 - registers test_slow_warm
import pytest

from rewards.bounded import BoundedPool
from rewards.scoring import score_batch, warm_up_worker

REPO = Path(__file__).resolve().parents[2]


def _run_script(tmp_path: Path, body: str) -> subprocess.CompletedProcess:
    script = tmp_path / "train_like_trl_quickstart.py"
    script.write_text(textwrap.dedent(body))
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "RLVR_REWARD_WORKERS": "1"}
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, env=env,
                          cwd=tmp_path)


def test_unguarded_script_scores(tmp_path):
    """A script with no `if __name__ == "__main__":` guard: spawn workers used to re-run it and die starting."""
    proc = _run_script(tmp_path, """
        from rewards.adapters.trl import make_reward_func
        print("top level ran", flush=True)
        reward = make_reward_func("gsm8k")
        print(reward(["Q"] * 2, ["#### 4", "#### 5"], ground_truth=["4", "4"]), flush=True)
    """)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines() == ["top level ran", "[1.0, 0.0]"]  # the script body ran once, not per worker


def test_verifier_defined_in_the_script_is_refused_up_front(tmp_path):
    proc = _run_script(tmp_path, """
        from rewards import Score, register
        from rewards.scoring import score_batch

        @register("in_script")
        def in_script(response, ground_truth, *, prompt=None):
            return Score(1.0)

        score_batch(["x"], ["y"], ["in_script"])
    """)
    assert proc.returncode == 1
    assert "verifier 'in_script' is defined in the script being run (__main__)" in proc.stderr


def test_math_verify_loads_only_where_math_is_scored():
    with BoundedPool(1, timeout_s=5.0, initializer=warm_up_worker) as pool:
        heavy = ("math_verify", "sympy", "langdetect")
        assert score_batch(["#### 4"], ["4"], ["gsm8k"], pool=pool).values == [1.0]
        assert pool.map(t.loaded_modules, [(heavy,)])[0].value == []
        assert score_batch(["\\boxed{\\frac12}"], ["0.5"], ["math"], pool=pool).values == [1.0]
        assert pool.map(t.loaded_modules, [(heavy,)])[0].value == ["math_verify", "sympy"]


def test_warm_up_is_not_charged_to_the_task_limit():
    with BoundedPool(2, timeout_s=1.0, warm_up_timeout_s=30.0) as pool:
        batch = score_batch(["a", "b", "c"], ["1", "1", "1"], ["test_slow_warm"] * 3, pool=pool)
        assert batch.values == [1.0, 1.0, 1.0] and batch.timeouts == 0
        assert pool.stats()["restarts"] == 0


def test_warm_up_past_its_own_limit_is_a_timeout():
    with BoundedPool(1, timeout_s=5.0, warm_up_timeout_s=0.5) as pool:
        batch = score_batch(["a"], ["1"], ["test_slow_warm"], pool=pool)
    assert batch.timeouts == 1 and "warm-up" in batch.scores[0].reason


def test_warm_ups_must_align_with_tasks():
    with BoundedPool(1) as pool, pytest.raises(ValueError, match="2 tasks but 1 warm-ups"):
        pool.map(t.square, [(1,), (2,)], warm_ups=[None])
