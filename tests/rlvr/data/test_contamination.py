"""N-gram contamination report on constructed overlaps, and against the real GSM8K test set."""

from __future__ import annotations

import json

from rlvr.cli import main
from rlvr.data.contamination import contamination_report, ngrams, normalize_words

EVAL_ITEMS = [
    ("leaked", "Natalia sold clips to 48 of her friends in April, and then she sold half as many in May."),
    ("clean", "A train leaves the station at noon and travels west for three hours at a steady speed."),
    ("short", "What is two plus two?"),
]


def test_normalisation_lowercases_and_strips_punctuation():
    assert normalize_words("Hello, World! It's 4.5-ish_") == ["hello", "world", "its", "45ish"]
    assert ngrams("a b c", 2) == {("a", "b"), ("b", "c")}
    assert ngrams("a b", 3) == set()


def test_constructed_overlap_is_found_across_case_and_punctuation():
    train = ["Some intro. NATALIA sold clips to 48 of her friends, in April -- and then more text follows.",
             "An unrelated training prompt about cooking pasta with tomatoes and basil for dinner tonight."]
    (rep,) = contamination_report(train, {"toy": EVAL_ITEMS}, n=8)
    assert rep.n_items == 3 and rep.n_contaminated == 1 and rep.too_short == 1
    assert abs(rep.fraction - 1 / 3) < 1e-12
    assert rep.examples[0]["id"] == "leaked"
    assert rep.examples[0]["shared_ngram"] in " ".join(normalize_words(train[0]))
    # a 7-word overlap is not an 8-gram hit, but is a 7-gram hit
    train7 = ["natalia sold clips to 48 of her"]
    assert contamination_report(train7, {"toy": EVAL_ITEMS}, n=8)[0].n_contaminated == 0
    assert contamination_report(train7, {"toy": EVAL_ITEMS}, n=7)[0].n_contaminated == 1


def test_cli_against_gsm8k_test(shared_data, tmp_path):
    test_rows = [json.loads(line) for line in (shared_data / "gsm8k" / "test.jsonl").read_text().splitlines()]
    train = tmp_path / "train.jsonl"
    leaked = [test_rows[5]["question"], test_rows[100]["question"]]
    with open(train, "w") as f:
        for q in leaked:
            f.write(json.dumps({"messages": [{"role": "user", "content": "Solve: " + q},
                                             {"role": "assistant", "content": "The answer is 1."}]}) + "\n")
        f.write(json.dumps({"prompt": "Write a poem about the sea in all lowercase letters please."}) + "\n")
    out = tmp_path / "report.json"
    code = main(["data", "contamination", "--train", str(train), "procedural:gsm8k?n=50&seed=0",
                 "--eval", "gsm8k", "--data-dir", str(shared_data), "--out", str(out)])
    assert code == 0
    report = json.loads(out.read_text())
    assert report["n"] == 8 and report["n_train_prompts"] == 53
    (ds,) = report["datasets"]
    assert ds["dataset"] == "gsm8k" and ds["n_items"] == len(test_rows)
    hit_ids = {e["id"] for e in ds["examples"]}
    assert {"gsm8k-test-5", "gsm8k-test-100"} <= hit_ids
    assert 2 <= ds["n_contaminated"] < 0.01 * len(test_rows)


def test_procedural_prompts_do_not_copy_benchmark_text(shared_data):
    from rlvr.data.contamination import load_eval_items, load_train_prompts

    prompts = load_train_prompts("procedural:mixed?n=1000&seed=0")
    evals = dict(load_eval_items(t, shared_data) for t in ("gsm8k", "ifeval"))
    reports = {r.dataset: r for r in contamination_report(prompts, evals, n=8)}
    assert reports["ifeval"].n_contaminated == 0  # our constraint wording is our own, not IFEval's
    assert reports["gsm8k"].fraction < 0.01


def test_cli_bad_inputs_exit_2_naming_the_input(tmp_path, capsys):
    missing = tmp_path / "nope.jsonl"
    assert main(["data", "contamination", "--train", str(missing), "--eval", "gsm8k"]) == 2
    assert str(missing) in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "fine"}\n{"no_prompt_here": 1}\n')
    assert main(["data", "contamination", "--train", str(bad), "--eval", "gsm8k"]) == 2
    assert f"{bad}:2" in capsys.readouterr().err
    assert main(["data", "contamination", "--train", "procedural:gsm8k?n=zz", "--eval", "gsm8k"]) == 2
    assert "n='zz'" in capsys.readouterr().err
