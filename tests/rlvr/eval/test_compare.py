"""`rlvr compare`: two IFEval evaluations of the same prompts -> accuracies with Wilson intervals, per-instruction
accuracy, response statistics that expose checker gaming (empty replies, loops), samples and the picture."""

from __future__ import annotations

import json

from rlvr.cli import main
from rlvr.eval.compare import compare, response_stats

NO_COMMA = "punctuation:no_comma"
TITLE = "detectable_format:title"


def _write_run(path, rows, model):
    path.write_text(json.dumps({"model": model, "results": {"ifeval": {"prompt_level_strict_acc": 0.0}}}))
    with open(path.with_suffix(".ifeval.samples.jsonl"), "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


def _row(i, ids, strict, response):
    return {"id": f"ifeval-{i}", "prompt": f"Prompt {i}.", "instruction_id_list": ids, "kwargs": [{}] * len(ids),
            "response": response, "strict": strict, "loose": strict}


def test_compare_counts_what_changed_and_flags_non_answers(tmp_path):
    prose = "A proper answer with enough words to count as an answer to the question asked here."
    before = [_row(i, [NO_COMMA, TITLE], [False, i % 2 == 0], prose) for i in range(40)]
    after = [_row(i, [NO_COMMA, TITLE], [True, True], prose if i < 30 else "") for i in range(40)]
    result = compare(before, list(reversed(after)))  # matched by id, not by order
    acc = result["accuracies"]["prompt_level_strict_acc"]
    assert acc["before"] == 0.0 and acc["after"] == 1.0 and acc["n"] == 40 and not acc["intervals_overlap"]
    lo, hi = acc["after_ci"]
    assert 0.9 < lo < 1.0 and hi == 1.0  # Wilson, not a zero-width interval
    inst = result["accuracies"]["inst_level_strict_acc"]
    assert inst["n"] == 80 and inst["before"] == 0.25
    assert result["per_instruction"][TITLE] == {"n": 40, "strict_before": 0.5, "strict_after": 1.0,
                                                "loose_before": 0.5, "loose_after": 1.0}
    stats = response_stats(after)
    assert stats["answering"] == 0.75 and stats["empty"] == 0.25  # the gain partly comes from empty replies


def test_compare_cli_writes_report_samples_and_picture(tmp_path, capsys):
    prose = "A proper answer with enough words to count as an answer to the question asked here."
    before = [_row(i, [NO_COMMA], [False], prose + ", with a comma") for i in range(30)]
    after = [_row(i, [NO_COMMA], [i < 20], prose) for i in range(30)]
    _write_run(tmp_path / "before.json", before, "base")
    _write_run(tmp_path / "after.json", after, "trained")
    assert main(["compare", str(tmp_path / "before.json"), str(tmp_path / "after.json"), "--out",
                 str(tmp_path / "cmp"), "--samples", "5"]) == 0
    report = (tmp_path / "cmp" / "report.md").read_text()
    assert "prompt_level_strict_acc | 0.000 [0.000, 0.114] | 0.667 [0.488, 0.808] | +66.7 pts | no" in report
    assert f"| {NO_COMMA} | 30 | 0.00 | 0.67 |" in report
    samples = (tmp_path / "cmp" / "samples.md").read_text()
    assert samples.count("**Before**") == 5 and "with a comma" in samples and "Prompt 0." in samples
    assert (tmp_path / "cmp" / "ifeval_per_instruction.png").stat().st_size > 5_000
    assert json.loads((tmp_path / "cmp" / "compare.json").read_text())["prompts"] == 30


def test_compare_refuses_runs_over_different_prompts(tmp_path, capsys):
    _write_run(tmp_path / "a.json", [_row(i, [NO_COMMA], [True], "x") for i in range(3)], "a")
    _write_run(tmp_path / "b.json", [_row(i, [NO_COMMA], [True], "x") for i in range(4)], "b")
    assert main(["compare", str(tmp_path / "a.json"), str(tmp_path / "b.json")]) == 2
    assert "different prompts" in capsys.readouterr().err
    (tmp_path / "c.json").write_text(json.dumps({"results": {"gsm8k": {}}}))
    assert main(["compare", str(tmp_path / "a.json"), str(tmp_path / "c.json")]) == 2
    assert "no ifeval results" in capsys.readouterr().err
