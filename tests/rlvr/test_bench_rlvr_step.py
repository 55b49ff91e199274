"""bench/rlvr_step.py compares each of our rows with TRL's fastest row on the same number of cores (our generator
and learner processes together), never with a TRL row on fewer cores."""

from __future__ import annotations

import importlib.util

from rlvr_core_helpers import REPO

spec = importlib.util.spec_from_file_location("rlvr_step_bench", REPO / "bench" / "rlvr_step.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def _row(framework: str, cores: int, tok_s: float) -> dict:
    return {"framework": framework, "model": "smollm2-135m-instruct", "cores": cores, "step_s": 1.0,
            "tokens_per_s": tok_s, "response_tokens_per_s": tok_s / 2, "mean_response_len": 64.0,
            **{f"{ph}_s": 0.0 for ph in bench.PHASES}}


def test_our_rows_are_compared_with_the_fastest_trl_row_on_equal_cores():
    args = bench.parse_args(["--threads", "1"])
    assert args.trl_threads == [1, 2]
    rows = [_row("TRL GRPOTrainer bf16", 1, 50.0), _row("TRL GRPOTrainer fp32", 2, 60.0),
            _row("TRL GRPOTrainer bf16", 2, 70.0), _row("ours (async 1) grpo", 2, 210.0)]
    lines = bench.report(rows, {"float32": 9e10, "bfloat16": 3.6e11, "native_bf16": True}, args)
    ratio = [line for line in lines if "/ TRL" in line]
    assert len(ratio) == 1
    assert "TRL GRPOTrainer bf16, both on 2 cores" in ratio[0] and "3.00x" in ratio[0] and "met" in ratio[0]
    assert any("[1c]" in line for line in lines) and any("%bf16" in line for line in lines)
    # no TRL row on our core count: said so, no ratio against fewer cores
    lines = bench.report(rows[:1] + rows[3:], {"float32": 9e10, "bfloat16": 3.6e11}, args)
    assert not any("/ TRL" in line for line in lines)
    assert any("no TRL row on 2 cores" in line for line in lines)
