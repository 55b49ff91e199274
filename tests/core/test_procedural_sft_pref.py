"""Procedural SFT and preference data (gsm8k_sft, gsm8k_pref): worked solutions reach the verified answer, the
rejected reply carries a slip to a wrong answer, rows are reproducible, and sft_dpo loads them from a
`procedural:` spec."""

from __future__ import annotations

import re

import pytest

from core.procedural import generate, worked_solution
from rewards.registry import get_verifier
from sft_dpo.data import DataConfig, DataError, iter_rows, load_pair_examples, load_sft_examples


def test_sft_rows_solve_the_gsm8k_problem_verifiably():
    verify = get_verifier("gsm8k")
    rows = generate("gsm8k_sft", 300, seed=0)
    problems = {r["messages"][0]["content"] for r in generate("gsm8k", 1, seed=0)}
    assert problems  # same templates, own random stream
    templates = set()
    for row in rows:
        user, reply = row["messages"]
        assert user["role"] == "user" and reply["role"] == "assistant"
        assert reply["content"].endswith(f"The answer is {row['ground_truth']}.")
        assert verify(reply["content"], row["ground_truth"]).value == 1.0
        # every step line is arithmetic that holds: "a x b = r", "a + b = r", ...
        for a, op, b, r in re.findall(r"\$?(-?\d+) ([x+\-/]) \$?(-?\d+) = \$?(-?\d+)", reply["content"]):
            a, b, r = int(a), int(b), int(r)
            assert {"x": a * b, "+": a + b, "-": a - b, "/": a // b if b else None}[op] == r, reply["content"]
        templates.add(row["meta"]["template"])
    assert len(templates) == 7


def test_pref_rows_chosen_verifies_and_rejected_does_not():
    verify = get_verifier("gsm8k")
    rows = generate("gsm8k_pref", 400, seed=5)
    for row in rows:
        chosen, rejected = row["chosen"], row["rejected"]
        assert chosen[0] == rejected[0] and chosen[0]["role"] == "user"
        assert chosen[-1]["role"] == rejected[-1]["role"] == "assistant"
        assert verify(chosen[-1]["content"], row["ground_truth"]).value == 1.0
        assert verify(rejected[-1]["content"], row["ground_truth"]).value == 0.0
        assert rejected[-1]["content"].endswith(f"The answer is {row['meta']['rejected_answer']}.")
        assert chosen[-1]["content"] != rejected[-1]["content"]


def test_slip_propagates_and_inexact_slips_are_refused():
    ops = {"r": 5, "h": 3, "days": 4}
    text, answer = worked_solution("rates", ops)
    assert answer == 60 and text.endswith("The answer is 60.")
    wrong_text, wrong = worked_solution("rates", ops, slip=(0, 1))  # 16 per day instead of 15
    assert wrong == 64 and "16 x 4 = 64" in wrong_text
    # a slip before an exact division that no longer divides gives no solution
    assert worked_solution("sharing", {"total": 13, "kept": 1, "friends": 4}, slip=(0, 1)) is None


@pytest.mark.parametrize("task", ["gsm8k_sft", "gsm8k_pref"])
def test_reproducible_and_prefix_stable(task):
    a = generate(task, 30, seed=2)
    assert a == generate(task, 30, seed=2)
    assert generate(task, 7, seed=2) == a[:7]
    assert a != generate(task, 30, seed=3)


def test_sft_dpo_loads_procedural_specs(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    spec = "procedural:gsm8k_sft?n=6&seed=1"
    rows = [r for r, _ in iter_rows(spec)]
    assert rows == generate("gsm8k_sft", 6, 1)
    sft, report = load_sft_examples(DataConfig(path=spec, max_length=512), tok)
    assert report.kept == 6 and all(sum(e.loss_mask) > 0 for e in sft)
    pairs, report = load_pair_examples(DataConfig(path="procedural:gsm8k_pref?n=5&seed=1", max_length=512), tok)
    assert report.kept == 5
    assert all(p.chosen_ids != p.rejected_ids for p in pairs)
    with pytest.raises(DataError, match="unknown task"):
        list(iter_rows("procedural:nope?n=3"))


def test_arithmetic_task_is_exact_and_verifiable():
    from core.procedural import generate
    from rewards import get_verifier

    rows = generate("arithmetic", 200, seed=5)
    assert rows == generate("arithmetic", 200, seed=5)
    gsm8k = get_verifier("gsm8k")
    ops = {"+": int.__add__, "-": int.__sub__, "x": int.__mul__}
    for row in rows:
        o = row["meta"]["operands"]
        expected = ops[o["op"]](o["a"], o["b"])
        assert row["ground_truth"] == str(expected) and expected >= 0
        assert f"{o['a']} {o['op']} {o['b']}" in row["messages"][0]["content"]
        assert gsm8k(f"The answer is {expected}.", row["ground_truth"]).value == 1.0
        assert gsm8k(f"The answer is {expected + 1}.", row["ground_truth"]).value == 0.0
