"""`rlvr verify --verifier ifeval`: Google's per-instruction lists in `--out`, and `--format google` files in the
exact format of Google's `evaluation_main` (checked against Google's own output files when they are available)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from rewards.ifeval import check_instructions
from rlvr.cli import main

GOOGLE_KEYS = ["follow_all_instructions", "follow_instruction_list", "instruction_id_list", "prompt", "response"]
GPT4_RESPONSES = "input_response_data_gpt4_20231107_145030.jsonl"


def _write(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def prompts_file(shared_data) -> Path:
    return shared_data / "ifeval" / "input_data.jsonl"


def test_out_rows_carry_googles_lists_and_google_format_files(prompts_file, tmp_path, capsys):
    prompts = [json.loads(line) for line in prompts_file.read_text().splitlines()[:4]]
    prompts_file = _write(tmp_path / "four_prompts.jsonl", prompts)
    responses = [  # out of order, one by key, one by prompt text, one prompt without a response
        {"prompt": prompts[2]["prompt"], "response": "A first line.\n*Sure*, here it is — “quoted”."},
        {"key": prompts[0]["key"], "response": "Raymond III was Count of Tripoli. *Part 1*"},
        {"key": prompts[1]["key"], "response": "P.S. i wrote this in lowercase"},
    ]
    src = _write(tmp_path / "responses.jsonl", responses)
    out_rows, out_dir = tmp_path / "rows.jsonl", tmp_path / "google"
    assert main(["verify", "--verifier", "ifeval", "--input", str(src), "--prompts", str(prompts_file),
                 "--out", str(out_rows), "--workers", "1"]) == 0
    assert main(["verify", "--verifier", "ifeval", "--input", str(src), "--prompts", str(prompts_file),
                 "--format", "google", "--out", str(out_dir), "--workers", "1"]) == 0
    assert "1 prompt(s) of" in capsys.readouterr().err  # prompts[3] has no response: left out, and said so

    by_prompt = {p["prompt"]: p for p in prompts}
    rows = [json.loads(line) for line in out_rows.read_text().splitlines()]
    for row, resp in zip(rows, responses):
        target = by_prompt[resp["prompt"]] if "prompt" in resp else next(p for p in prompts if p["key"] == resp["key"])
        want = check_instructions(resp["response"], target["instruction_id_list"], target["kwargs"], max_chars=None)
        assert row["instruction_id_list"] == target["instruction_id_list"]
        assert row["follow_instruction_list"] == want.strict
        assert row["follow_instruction_list_loose"] == want.loose

    for name, loose in (("eval_results_strict.jsonl", False), ("eval_results_loose.jsonl", True)):
        lines = (out_dir / name).read_text().splitlines()
        assert len(lines) == 3
        written = [json.loads(line) for line in lines]
        assert [w["prompt"] for w in written] == [p["prompt"] for p in prompts[:3]]  # the prompts file's order
        for line, w in zip(lines, written):
            assert list(w) == GOOGLE_KEYS and line == json.dumps(w)  # json.dumps defaults, keys sorted as dir()
            want = check_instructions(w["response"], w["instruction_id_list"], by_prompt[w["prompt"]]["kwargs"],
                                      max_chars=None)
            assert w["follow_instruction_list"] == (want.loose if loose else want.strict)
            assert w["follow_all_instructions"] == all(w["follow_instruction_list"])


def test_google_format_needs_an_out_dir(prompts_file, tmp_path, capsys):
    src = _write(tmp_path / "r.jsonl", [{"key": 1000, "response": "x"}])
    assert main(["verify", "--verifier", "ifeval", "--input", str(src), "--prompts", str(prompts_file),
                 "--format", "google"]) == 2
    assert "--format google writes files: give --out DIR" in capsys.readouterr().err


def test_no_row_joins_is_one_line(prompts_file, tmp_path, capsys):
    src = _write(tmp_path / "r.jsonl", [{"key": -1, "response": "x"}, {"key": -2, "response": "y"}])
    assert main(["verify", "--verifier", "ifeval", "--input", str(src), "--prompts", str(prompts_file)]) == 2
    assert "none of the 2 rows" in capsys.readouterr().err


def _gpt4_dir(shared_data: Path) -> Path | None:
    for candidate in (os.environ.get("RLVR_IFEVAL_GPT4_DIR"), shared_data / "ifeval"):
        if candidate and all((Path(candidate) / f).is_file() for f in
                             (GPT4_RESPONSES, "eval_results_strict.jsonl", "eval_results_loose.jsonl")):
            return Path(candidate)
    return None


def test_same_lists_as_googles_evaluator_on_gpt4_responses(shared_data, prompts_file, tmp_path):
    """Google's published GPT-4 responses and its evaluator's eval_results_{strict,loose}.jsonl: every line the
    same, except letter_frequency with a non-letter `letter` (Google's code substitutes a random letter)."""
    found = _gpt4_dir(shared_data)
    if found is None:
        pytest.skip(f"Google's GPT-4 responses ({GPT4_RESPONSES}) and evaluator outputs are not in "
                    f"{shared_data / 'ifeval'} (or $RLVR_IFEVAL_GPT4_DIR), and a CI machine cannot get them: they "
                    "live only in google-research's repository (and copies such as Podtech-AI/IFEval), which CI "
                    "cannot reach, and no package on PyPI ships them (checked: lm-eval, lighteval, if-verifiable, "
                    "nvidia-ifbench)")
    out = tmp_path / "ours"
    assert main(["verify", "--verifier", "ifeval", "--input", str(found / GPT4_RESPONSES), "--prompts",
                 str(prompts_file), "--format", "google", "--out", str(out)]) == 0
    kwargs = {p["prompt"]: p["kwargs"] for p in map(json.loads, prompts_file.read_text().splitlines())}
    for name in ("eval_results_strict.jsonl", "eval_results_loose.jsonl"):
        ours, google = (out / name).read_text().splitlines(), (found / name).read_text().splitlines()
        assert len(ours) == len(google) >= 540
        for mine, theirs in zip(ours, google):
            if mine == theirs:
                continue
            a, b = json.loads(mine), json.loads(theirs)
            assert {k: v for k, v in a.items() if not k.startswith("follow")} == \
                   {k: v for k, v in b.items() if not k.startswith("follow")}
            for iid, kw, x, y in zip(a["instruction_id_list"], kwargs[a["prompt"]], a["follow_instruction_list"],
                                     b["follow_instruction_list"]):
                if x != y:
                    assert iid == "keywords:letter_frequency" and not kw["letter"].isalpha(), (iid, kw, a["prompt"])
