"""Eval data loaders on ../shared/data: counts, normalised fields, lm-eval's HellaSwag preprocessing."""

from __future__ import annotations

import json

import pytest

from rlvr.eval.data import EvalDataError, hellaswag_preprocess, load_task_docs, split_gsm8k_answer


def test_hellaswag_preprocess():
    assert hellaswag_preprocess(" How to cook [title] Boil water. [step] Add salt.") == "How to cook. Boil water. Add salt."


def test_gsm8k_answer_split():
    sol, final = split_gsm8k_answer("She has 3 + 4 = <<3+4=7>>7 apples.\n#### 1,007")
    assert (sol, final) == ("She has 3 + 4 = 7 apples.", "1007")
    with pytest.raises(EvalDataError, match="####"):
        split_gsm8k_answer("no marker", "f.jsonl:3")


@pytest.mark.parametrize("task,count", [("gsm8k", 1319), ("ifeval", 541), ("arc_easy", 2376),
                                        ("arc_challenge", 1172), ("hellaswag", 1000)])
def test_local_counts(shared_data, task, count):
    docs = load_task_docs(task, data_dir=shared_data)
    assert len(docs) == count
    assert len({d["id"] for d in docs}) == count


def test_local_fields(shared_data):
    gsm = load_task_docs("gsm8k", data_dir=shared_data)[0]
    assert gsm["answer"] == "18" and "####" not in gsm["solution"] and "<<" not in gsm["solution"]
    assert len(load_task_docs("gsm8k", data_dir=shared_data, split="train")) == 7473
    arc = load_task_docs("arc_easy", data_dir=shared_data)[0]
    assert not arc["question"].startswith("Question:") and arc["gold"] == 0 and len(arc["choices"]) == 4
    hs = load_task_docs("hellaswag", data_dir=shared_data)[0]
    assert hs["query"].startswith("Pole vault: Pole vault is a sport") and hs["query"].endswith("A few women")
    assert hs["gold"] == 3 and len(hs["choices"]) == 4
    ife = load_task_docs("ifeval", data_dir=shared_data)[0]
    assert ife["id"] == "1000" and ife["kwargs"][1] == {"num_highlights": 3}


def test_bad_line_names_file_and_line(tmp_path):
    (tmp_path / "gsm8k").mkdir()
    (tmp_path / "gsm8k" / "test.jsonl").write_text(json.dumps({"question": "q", "answer": "#### 1"}) + "\n{oops\n")
    with pytest.raises(EvalDataError, match=r"test.jsonl:2"):
        load_task_docs("gsm8k", data_dir=tmp_path)
    with pytest.raises(EvalDataError, match="not found"):
        load_task_docs("ifeval", data_dir=tmp_path)
