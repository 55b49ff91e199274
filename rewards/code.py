"""The code verifier (`dataset: code`): run the response's program against the row's tests in `rewards.sandbox`.

The program is the last ```python (or ```py) fenced block of the response, else the last plain ``` block, else the
whole response. The ground truth (a dict or its JSON string) carries the tests in one of three forms:

- HumanEval style: `{"test": "def check(candidate): ...", "entry_point": "add"}`: the program, then the test code,
  then `check(add)`; one test.
- assert list (MBPP style): `{"asserts": ["assert add(1, 2) == 3", ...]}` (or `"test_list"`), with an optional
  `"setup"` code run after the program; each assert is one test.
- stdin/stdout cases (APPS / CodeContests / TACO style): `{"inputs": ["1 2\\n", ...], "outputs": ["3\\n", ...]}`:
  the program runs once per case, in a fresh sandbox, with the input on stdin; a case passes when it exits 0 and
  its output equals the expected one up to trailing whitespace on each line and blank lines at the end.
Optional in any form: `"timeout_s"` (wall seconds per program run, at most $RLVR_CODE_TIMEOUT_S).

`code` scores 1.0 iff every test passes, `code_fraction` the fraction that pass. The reason always starts with a
category and the count, e.g. `correct (5/5 tests passed)`, `failed (3/5 tests passed): test 2: AssertionError`,
`time limit (0/1 tests passed): ...`, `no code (0/3 tests passed)`; `count_passed(reason)` reads the count back
(the `rlvr verify` summary reports the mean fraction from it).

Assert-style verdicts are not the program's own output: the harness reads a random token from stdin before the
program runs and tags each result with it, so a program that prints "PASS" or exits early does not pass. It is not
proof against a program that digs the token out of the harness's memory or returns objects that compare equal to
everything: like every in-process test harness, it checks programs, it does not judge adversaries.

Limits: $RLVR_CODE_TIMEOUT_S (wall seconds per program run, default 3), $RLVR_CODE_BUDGET_S (all runs of one call,
default 4: stdin cases left when it runs out fail), $RLVR_CODE_MEMORY_MB (default 512). The scoring pool's own
limit per call (`rlvr verify --timeout`, $RLVR_REWARD_TIMEOUT_S, default 5 s) must be above the budget. The
sandbox mode is `rewards.sandbox`'s ($RLVR_SANDBOX); where no isolating mode works, every call is an error
(counted in `reward/errors`), never a silent 0.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import time
from typing import Any

from rewards.base import MAX_RESPONSE_CHARS, Score
from rewards.registry import register
from rewards.sandbox import SandboxLimits, resolve_mode, run_python

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
_COUNT = re.compile(r"\((\d+)/(\d+) tests passed\)")
MAX_TESTS = 1000
MAX_GROUND_TRUTH_CHARS = 5_000_000


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name, "")
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"${name}={raw!r} is not a number") from None
    if not value > 0:
        raise ValueError(f"${name}={raw!r} must be > 0")
    return value


def extract_program(response: str) -> str:
    """The program in a response: the last python fenced block, else the last fenced block, else the text."""
    blocks = _FENCE.findall(response)
    python = [body for lang, body in blocks if lang.lower() in ("python", "py", "python3", "py3")]
    if python:
        return python[-1]
    plain = [body for lang, body in blocks if not lang]
    return plain[-1] if plain else response


def count_passed(reason: str) -> tuple[int, int] | None:
    """(passed, total) from a code verifier's reason, or None if the reason is not one."""
    m = _COUNT.search(reason)
    return (int(m.group(1)), int(m.group(2))) if m else None


def parse_tests(ground_truth: Any) -> dict[str, Any]:
    """The ground truth as {"kind": "asserts" | "io", ...}; ValueError naming what is wrong."""
    if isinstance(ground_truth, str):
        if len(ground_truth) > MAX_GROUND_TRUTH_CHARS:
            raise ValueError(f"code ground truth is {len(ground_truth)} characters (max {MAX_GROUND_TRUTH_CHARS})")
        try:
            ground_truth = json.loads(ground_truth)
        except json.JSONDecodeError as err:
            raise ValueError(f"code ground truth is not JSON: {err}") from None
    if not isinstance(ground_truth, dict):
        raise ValueError(f"code ground truth must be an object, got {type(ground_truth).__name__}")
    gt = ground_truth
    timeout = gt.get("timeout_s")
    if timeout is not None and not (isinstance(timeout, (int, float)) and timeout > 0):
        raise ValueError(f"code ground truth: timeout_s must be a positive number, got {timeout!r}")
    if "test" in gt:
        if not isinstance(gt["test"], str):
            raise ValueError("code ground truth: 'test' must be a string of test code")
        entry = gt.get("entry_point")
        if entry is not None and not (isinstance(entry, str) and entry.isidentifier()):
            raise ValueError(f"code ground truth: entry_point must be an identifier, got {entry!r}")
        test = gt["test"] + (f"\n\ncheck({entry})\n" if entry else "\n")
        return {"kind": "asserts", "tests": [test], "setup": "", "timeout_s": timeout}
    asserts = gt.get("asserts", gt.get("test_list"))
    if asserts is not None:
        if not (isinstance(asserts, list) and asserts and all(isinstance(a, str) for a in asserts)):
            raise ValueError("code ground truth: 'asserts' must be a non-empty list of strings")
        setup = gt.get("setup", gt.get("test_setup_code", "")) or ""
        if not isinstance(setup, str):
            raise ValueError("code ground truth: 'setup' must be a string")
        return {"kind": "asserts", "tests": asserts[:MAX_TESTS], "setup": setup, "timeout_s": timeout}
    if "inputs" in gt or "outputs" in gt:
        if gt.get("fn_name"):
            raise ValueError("code ground truth: call-based cases (fn_name) are not supported; give asserts")
        inputs, outputs = gt.get("inputs"), gt.get("outputs")
        if not (isinstance(inputs, list) and isinstance(outputs, list) and inputs and len(inputs) == len(outputs)):
            raise ValueError("code ground truth: 'inputs' and 'outputs' must be non-empty lists of the same length")
        if not all(isinstance(x, str) for x in inputs + outputs):
            raise ValueError("code ground truth: every input and output must be a string")
        return {"kind": "io", "cases": list(zip(inputs, outputs))[:MAX_TESTS], "timeout_s": timeout}
    raise ValueError(f"code ground truth has none of 'test', 'asserts', 'inputs'/'outputs' (keys: {sorted(gt)[:10]})")


# The assert harness: trusted code around the program. The token arrives on stdin, before the program runs.
_HARNESS = r'''
import os as _os, sys as _sys
_out = _os.dup(1)
_token = _sys.stdin.readline().strip()
def _report(tag, _w=_os.write, _o=_out, _t=_token):
    try:
        _w(_o, ("\n%s %s\n" % (_t, tag)).encode("utf-8", "replace"))
    except OSError:
        pass
def _describe(e):
    text = ("%s: %s" % (type(e).__name__, e)) if str(e) else type(e).__name__
    return text[:300].replace("\n", " ")
_ns = {"__name__": "__solution__", "__builtins__": __builtins__}
try:
    exec(compile(PROGRAM, "solution.py", "exec"), _ns)
    if SETUP:
        exec(compile(SETUP, "setup.py", "exec"), _ns)
except BaseException as _e:
    _report("PROGRAM " + _describe(_e))
    _os._exit(0)
_report("LOADED")
for _i, _test in enumerate(TESTS):
    _report("START %d" % _i)
    try:
        exec(compile(_test, "test_%d.py" % _i, "exec"), _ns)
    except BaseException as _e:
        _report("FAIL %d %s" % (_i, _describe(_e)))
    else:
        _report("PASS %d" % _i)
_report("DONE")
_os._exit(0)
'''


def _harness(program: str, setup: str, tests: list[str]) -> str:
    return f"PROGRAM = {program!r}\nSETUP = {setup!r}\nTESTS = {tests!r}\n" + _HARNESS


def _limits(wall_s: float) -> SandboxLimits:
    memory = int(_env_float("RLVR_CODE_MEMORY_MB", 512))
    return SandboxLimits(wall_s=wall_s, cpu_s=wall_s, memory_mb=memory, max_processes=16,
                         max_output_chars=200_000)


def _score(passed: int, total: int, category: str, detail: str, *, fraction: bool) -> Score:
    value = passed / total if fraction else float(passed == total)
    if passed == total:
        category = "correct"
    reason = f"{category} ({passed}/{total} tests passed)" + (f": {detail}" if detail else "")
    return Score(value, reason[:1000])


def _run_asserts(program: str, spec: dict, per_run_s: float, fraction: bool) -> Score:
    tests = spec["tests"]
    token = secrets.token_hex(16)
    res = run_python(_harness(program, spec["setup"], tests), stdin=token + "\n", limits=_limits(per_run_s))
    passed, failed, started, loaded, program_error = set(), {}, -1, False, ""
    for line in res.stdout.splitlines():
        if not line.startswith(token + " "):
            continue
        kind, _, rest = line[len(token) + 1:].partition(" ")
        if kind == "LOADED":
            loaded = True
        elif kind == "PROGRAM":
            program_error = rest
        elif kind == "START":
            started = int(rest)
        elif kind == "PASS":
            passed.add(int(rest))
        elif kind == "FAIL":
            i, _, why = rest.partition(" ")
            failed[int(i)] = why
    n = len(tests)
    if program_error:
        return _score(0, n, "program error", program_error, fraction=fraction)
    if failed:
        i = min(failed)
        shown = f" `{tests[i].strip()}`" if len(tests[i]) <= 120 and "\n" not in tests[i].strip() else ""
        return _score(len(passed), n, "failed", f"test {i}{shown}: {failed[i]}", fraction=fraction)
    if len(passed) == n:
        return _score(n, n, "correct", "", fraction=fraction)
    where = f"during test {started}" if started >= 0 else ("after loading" if loaded else "while loading")
    if res.timed_out or res.killed_reason:
        return _score(len(passed), n, "time limit" if res.timed_out else "killed",
                      f"{res.killed_reason} {where}", fraction=fraction)
    tail = res.stderr.strip().splitlines()[-1:] or [f"exit code {res.exit_code}"]
    return _score(len(passed), n, "crashed", f"{where}: {tail[0][:200]}", fraction=fraction)


def _normalise(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.rstrip().splitlines())


def _run_io(program: str, spec: dict, per_run_s: float, budget_s: float, fraction: bool) -> Score:
    cases = spec["cases"]
    deadline = time.monotonic() + budget_s
    passed, first = 0, ""
    for i, (stdin, expected) in enumerate(cases):
        left = deadline - time.monotonic()
        if left < 0.2:
            detail = first or f"time budget of {budget_s:g} s used up after {i} of {len(cases)} cases"
            return _score(passed, len(cases), "failed" if first else "time limit", detail, fraction=fraction)
        res = run_python(program, stdin=stdin, limits=_limits(min(per_run_s, left)))
        if res.ok and _normalise(res.stdout) == _normalise(expected):
            passed += 1
            continue
        if not first:
            if res.killed_reason:
                first = f"case {i}: {res.killed_reason}"
            elif res.exit_code != 0:
                tail = res.stderr.strip().splitlines()[-1:] or [""]
                first = f"case {i}: exit code {res.exit_code} {tail[0][:200]}"
            else:
                first = f"case {i}: wrong output {res.stdout[:80]!r}, expected {expected[:80]!r}"
        if not fraction:  # the verdict is decided: skip the remaining cases
            return _score(passed, len(cases), "failed", first, fraction=False)
    return _score(passed, len(cases), "failed", first, fraction=fraction)


def verify_code(response: str, ground_truth: Any, *, prompt: str | None = None, fraction: bool = False) -> Score:
    """Score `response`'s program against `ground_truth`'s tests (see the module docstring)."""
    spec = parse_tests(ground_truth)
    per_run = _env_float("RLVR_CODE_TIMEOUT_S", 3.0)
    if spec["timeout_s"] is not None:
        per_run = min(per_run, float(spec["timeout_s"]))
    budget = _env_float("RLVR_CODE_BUDGET_S", 4.0)
    total = len(spec["tests"]) if spec["kind"] == "asserts" else len(spec["cases"])
    program = extract_program(str(response)[:MAX_RESPONSE_CHARS])
    if not program.strip():
        return _score(0, total, "no code", "", fraction=fraction)
    if spec["kind"] == "asserts":
        return _run_asserts(program, spec, min(per_run, budget), fraction)
    return _run_io(program, spec, per_run, budget, fraction)


def _warm_up() -> None:
    """Per worker, before its first code call: find the sandbox mode (probes it once), or fail loudly."""
    resolve_mode()


@register("code", "humaneval", "mbpp")
def code(response: str, ground_truth: Any, *, prompt: str | None = None) -> Score:
    return verify_code(response, ground_truth, prompt=prompt)


@register("code_fraction")
def code_fraction(response: str, ground_truth: Any, *, prompt: str | None = None) -> Score:
    return verify_code(response, ground_truth, prompt=prompt, fraction=True)


code.warm_up = _warm_up
code_fraction.warm_up = _warm_up


class CodeVerifyHook:
    """`rlvr verify --verifier code`: the mean fraction of tests passed, next to the all-pass score."""

    @staticmethod
    def report(args, rows, batch) -> dict[str, float]:
        counts = [count_passed(s.reason) for s in batch.scores]
        fractions = [p / t for p, t in (c for c in counts if c) if t]
        if not fractions:
            return {}
        return {"tests_passed_fraction": sum(fractions) / len(fractions),
                "rows_with_test_counts": len(fractions)}


HOOK = CodeVerifyHook()
