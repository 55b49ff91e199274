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
    src = _write_jsonl(tmp_path / "hang.jsonl", [
        {"response": "x", "ground_truth": "1", "dataset": "test_hangs"},
        {"response": "#### 1", "ground_truth": "1", "dataset": "gsm8k"},
    ])
    assert main(["verify", "--dataset-field", "dataset", "--input", str(src), "--timeout", "1"]) == 0
    printed = capsys.readouterr().out
    assert "timeouts: 1" in printed and "1  timeout" in printed


def test_report_hook(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(verify_cmd.HOOKS, "test_half", "faulty_verifiers:HALF_REPORT")
    src = _write_jsonl(tmp_path / "h.jsonl", [{"response": "a", "ground_truth": "1"}] * 4)
    assert main(["verify", "--verifier", "test_half", "--input", str(src), "--half-bonus", "1"]) == 0
    assert "half_total_plus_bonus: 3.0000" in capsys.readouterr().out


# --- run-level errors: one line, exit 2; all rows failed: exit 1 ------------------------------------------------
def test_field_missing_in_every_row_names_the_fields_that_exist(shared_data, capsys):
    """The README's example on GSM8K's own file used to print 1,319 'skipped' lines and exit 0."""
    code = main(["verify", "--verifier", "gsm8k", "--input", str(shared_data / "gsm8k" / "test.jsonl")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "skipped" not in err
    assert "has the field 'response' (--response-field); the rows' fields are: answer, question" in err


def test_missing_label_field_everywhere(tmp_path, capsys):
    src = _write_jsonl(tmp_path / "r.jsonl", [{"response": "#### 1", "gold": "1"}] * 3)
    assert main(["verify", "--verifier", "gsm8k", "--input", str(src)]) == 2
    assert "field 'ground_truth' (--label-field); the rows' fields are: gold, response" in capsys.readouterr().err


def test_non_utf8_line_is_one_line_with_file_and_line(tmp_path, capsys):
    src = tmp_path / "latin1.jsonl"
    src.write_bytes(b'{"response": "#### 4", "ground_truth": "4"}\n{"response": "\xff #### 4", "ground_truth": "4"}\n')
    assert main(["verify", "--verifier", "gsm8k", "--input", str(src)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{src}:2: not UTF-8 text (byte 0xff at column 15)" in err


@pytest.mark.parametrize("option, value", [("--timeout", "0"), ("--workers", "0"), ("--timeout", "-1"),
                                           ("--workers", "two")])
def test_bad_numbers_are_usage_errors(tmp_path, capsys, option, value):
    src = _write_jsonl(tmp_path / "r.jsonl", [{"response": "#### 1", "ground_truth": "1"}])
    with pytest.raises(SystemExit) as exc:
        main(["verify", "--verifier", "gsm8k", "--input", str(src), option, value])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}:" in err and "Traceback" not in err


def test_every_row_failing_exits_1(tmp_path, capsys):
    src = _write_jsonl(tmp_path / "r.jsonl", [{"response": "x", "ground_truth": "1"}] * 3)
    assert main(["verify", "--verifier", "test_raises", "--input", str(src)]) == 1
    assert "errors: 3" in capsys.readouterr().out


def test_broken_entry_point_fails_at_set_up(tmp_path, monkeypatch, capsys):
    import importlib

    from rewards import registry

    registry.known_verifiers()
    monkeypatch.setattr(registry, "_registry", dict(registry._registry))
    monkeypatch.setattr(registry, "_loaded", False)
    dist = tmp_path / "broken_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[rlvr.verifiers]\nbroken_ep = no_such_module_abc:fn\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    src = _write_jsonl(tmp_path / "r.jsonl", [{"response": "x", "ground_truth": "1"}])
    assert main(["verify", "--verifier", "broken_ep", "--input", str(src)]) == 2
    err = capsys.readouterr().err
    assert "cannot import module 'no_such_module_abc'" in err and "entry point 'broken_ep'" in err


def test_closed_output_pipe_is_one_line(tmp_path):
    """`rlvr verify ... | head -1`: the reader goes away before the summary is written."""
    import subprocess
    import sys
    from pathlib import Path

    src = _write_jsonl(tmp_path / "r.jsonl", [{"response": "#### 1", "ground_truth": "1"}] * 4)
    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen([sys.executable, "-m", "rewards", "--verifier", "gsm8k", "--input", str(src)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=repo, text=True)
    proc.stdout.close()  # no reader: the first write (or the flush) gets EPIPE
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 1
    assert "Traceback" not in err and "Exception ignored" not in err
    assert err.strip() == "rlvr-verify: output closed early (broken pipe); --out files, if any, are complete"


# --- plug-ins from the command line ----------------------------------------------------------------------------
def test_import_option_makes_decorator_plugins_usable(tmp_path, monkeypatch, capsys):
    (tmp_path / "my_checks_mod.py").write_text(
        "from rewards import Score, register\n\n"
        "@register('shouts')\n"
        "def shouts(response, ground_truth, *, prompt=None):\n"
        "    return Score(float(response.isupper()), 'upper' if response.isupper() else 'not upper')\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.path", list(__import__("sys").path))
    src = _write_jsonl(tmp_path / "r.jsonl", [{"response": "HI", "ground_truth": ""}, {"response": "hi", "ground_truth": ""}])
    assert main(["verify", "--verifier", "shouts", "--input", str(src)]) == 2
    assert "unknown verifier 'shouts'" in capsys.readouterr().err
    assert main(["verify", "--import", "my_checks_mod", "--verifier", "shouts", "--input", str(src)]) == 0
    assert "score: 1 / 2" in capsys.readouterr().out
    assert main(["verify", "--import", "no_such_mod_xyz", "--verifier", "gsm8k", "--input", str(src)]) == 2
    assert "--import no_such_mod_xyz: No module named 'no_such_mod_xyz'" in capsys.readouterr().err


def test_light_entry_points_run_the_same_command(tmp_path, capsys):
    from rewards.cli import main as light_main

    src = _write_jsonl(tmp_path / "r.jsonl", [{"response": "#### 1", "ground_truth": "1"}])
    assert light_main(["--verifier", "gsm8k", "--input", str(src)]) == 0
    assert "score: 1 / 1" in capsys.readouterr().out
    assert light_main(["--verifier", "gsm8k", "--input", str(tmp_path / "nope.jsonl")]) == 2
    assert capsys.readouterr().err.startswith("rlvr-verify: error: input file")


def test_malformed_dataset_values_are_row_errors(tmp_path, capsys):
    src = _write_jsonl(tmp_path / "r.jsonl", [{"response": "#### 1", "ground_truth": "1", "dataset": 7},
                                              {"response": "#### 1", "ground_truth": "1", "dataset": "gsm8k"}])
    assert main(["verify", "--dataset-field", "dataset", "--input", str(src)]) == 0
    out = capsys.readouterr().out
    assert "score: 1 / 2" in out and "errors: 1" in out
