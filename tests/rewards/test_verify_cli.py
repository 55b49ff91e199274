"""`rlvr verify`: the GSM8K done-when check on the shared test set, malformed rows, per-row output, hooks."""

from __future__ import annotations

import json

import faulty_verifiers  # noqa: F401 - registers test_half
import pytest

from rlvr import verify as verify_cmd
from rlvr.cli import main


def _write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def gsm8k_test_rows(shared_data):
    with (shared_data / "gsm8k" / "test.jsonl").open() as f:
        return [json.loads(line) for line in f]


def test_gsm8k_reference_answers_all_score(gsm8k_test_rows, tmp_path, capsys):
    src = _write_jsonl(tmp_path / "own.jsonl",
                       [{"response": r["answer"], "ground_truth": r["answer"]} for r in gsm8k_test_rows])
    out = tmp_path / "results.jsonl"
    assert main(["verify", "--verifier", "gsm8k", "--input", str(src), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert len(gsm8k_test_rows) == 1319
    assert "score: 1319 / 1319" in printed
    results = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(results) == 1319 and all(r["score"] == 1.0 for r in results)
    assert results[0]["line"] == 1 and results[-1]["line"] == 1319


def test_gsm8k_wrong_answers_all_fail(gsm8k_test_rows, tmp_path, capsys):
    def wrong(answer: str) -> str:  # the reference with its final number changed
        body, _, final = answer.rpartition("####")
        return f"{body}#### {int(final.strip().replace(',', '')) + 1}"

    src = _write_jsonl(tmp_path / "wrong.jsonl",
                       [{"response": wrong(r["answer"]), "ground_truth": r["answer"]} for r in gsm8k_test_rows])
    assert main(["verify", "--verifier", "gsm8k", "--input", str(src)]) == 0
    printed = capsys.readouterr().out
    assert "score: 0 / 1319" in printed
    assert "1319  wrong" in printed


def test_malformed_rows_reported_with_line_numbers_and_skipped(tmp_path, capsys):
    src = _write_jsonl(tmp_path / "mixed.jsonl", [
        {"answer_text": "#### 4", "label": "4"},
        "{not json",
        "[1, 2]",
        {"answer_text": 4, "label": "4"},
        {"answer_text": "#### 4"},
        "",
        {"answer_text": "the answer is 5", "label": "4"},
    ])
    out = tmp_path / "r.jsonl"
    code = main(["verify", "--verifier", "gsm8k", "--input", str(src), "--response-field", "answer_text",
                 "--label-field", "label", "--out", str(out)])
    assert code == 0
    captured = capsys.readouterr()
    assert f"{src}:2: skipped: bad JSON" in captured.err
    assert f"{src}:3: skipped: not a JSON object" in captured.err
    assert f"{src}:4: skipped: response field 'answer_text' not a string" in captured.err
    assert f"{src}:5: skipped: label field 'label' missing" in captured.err
    assert "rows scored: 2   malformed/skipped: 4" in captured.out
    assert "score: 1 / 2" in captured.out
    assert [json.loads(x)["line"] for x in out.read_text().splitlines()] == [1, 7]


def test_dataset_field_and_unknown_verifier(tmp_path, capsys):
    src = _write_jsonl(tmp_path / "ds.jsonl", [
        {"response": "#### 4", "ground_truth": "4", "dataset": "gsm8k"},
        {"response": "\\boxed{\\frac12}", "ground_truth": "0.5", "dataset": "MATH"},
    ])
    assert main(["verify", "--dataset-field", "dataset", "--input", str(src)]) == 0
    printed = capsys.readouterr().out
    assert "score: 2 / 2" in printed and "gsm8k: 1 calls" in printed and "math: 1 calls" in printed
    assert main(["verify", "--verifier", "nope", "--input", str(src)]) == 2
    assert "unknown verifier 'nope'; known:" in capsys.readouterr().err
    assert main(["verify", "--verifier", "gsm8k", "--input", str(tmp_path / "missing.jsonl")]) == 2


def test_timeouts_are_reported(tmp_path, capsys):
    src = _write_jsonl(tmp_path / "hang.jsonl", [{"response": "x", "ground_truth": "1"}])
    assert main(["verify", "--verifier", "test_hangs", "--input", str(src), "--timeout", "1"]) == 0
    printed = capsys.readouterr().out
    assert "timeouts: 1" in printed and "1  timeout" in printed


def test_report_hook(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(verify_cmd.HOOKS, "test_half", "faulty_verifiers:HALF_REPORT")
    src = _write_jsonl(tmp_path / "h.jsonl", [{"response": "a", "ground_truth": "1"}] * 4)
    assert main(["verify", "--verifier", "test_half", "--input", str(src), "--half-bonus", "1"]) == 0
    assert "half_total_plus_bonus: 3.0000" in capsys.readouterr().out
