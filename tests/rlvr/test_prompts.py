"""RLVR prompt loading (Tulu 3 schema, GSM8K adapter, procedural, hub), malformed-row reporting (RELIABILITY #8)
and the resumable sampler (RELIABILITY #1: no replay, no skipped epoch)."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from rlvr.data.prompts import PromptDataError, load_prompts
from rlvr.data.sampler import PromptSampler
from rlvr.data.sources import GSM8K_INSTRUCTION, gsm8k_to_row, parse_hub_spec

KNOWN = ["gsm8k", "math", "ifeval"]


def _good(i: int, **over) -> dict:
    row = {"messages": [{"role": "user", "content": f"What is {i} + {i}?"}], "ground_truth": str(2 * i),
           "dataset": "gsm8k"}
    row.update(over)
    return row


def _write_jsonl(path, rows) -> str:
    lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


# ---- real files ----

def test_rlvr_sample_loads_in_tulu_schema(shared_data):
    src = str(shared_data / "rlvr_sample" / "rlvr_sample.jsonl")
    ps = load_prompts([src], known_verifiers=KNOWN)
    assert len(ps) == 8
    assert ps.verifier_counts() == {"MATH": 3, "gsm8k": 1, "ifeval": 4}
    assert ps.report.num_dropped == 0 and ps.report.total_rows == 8
    assert [r.line for r in ps] == list(range(1, 9))
    assert ps[0].id == "rlvr_sample.jsonl:1" and ps[0].where == f"{src}:1"
    assert all(r.messages[-1]["role"] == "user" for r in ps)
    ifeval = next(r for r in ps if r.dataset == "ifeval")
    assert json.loads(ifeval.ground_truth)["func_name"]
    assert "constraint_type" in ifeval.extra  # other columns survive
    assert ifeval.to_dict()["ground_truth"] == ifeval.ground_truth


def test_gsm8k_raw_rows_converted_by_prefix_and_autodetect(shared_data):
    path = shared_data / "gsm8k" / "test.jsonl"
    first = json.loads(path.read_text().splitlines()[0])
    explicit = load_prompts([f"gsm8k:{path}"], known_verifiers=KNOWN)
    auto = load_prompts([str(path)], known_verifiers=KNOWN)
    assert len(explicit) == len(auto) == 1319
    assert [r.to_dict() for r in explicit] == [r.to_dict() for r in auto]
    row = explicit[0]
    assert row.dataset == "gsm8k" and row.ground_truth == "18"
    assert row.messages == [{"role": "user", "content": f"{first['question']}\n{GSM8K_INSTRUCTION}"}]
    assert all("," not in r.ground_truth and r.ground_truth.strip() for r in explicit)


def test_google_ifeval_rows_converted_by_prefix_and_autodetect(shared_data, tmp_path):
    from rewards import get_verifier

    path = shared_data / "ifeval" / "input_data.jsonl"
    first = json.loads(path.read_text().splitlines()[0])
    explicit = load_prompts([f"ifeval:{path}"])
    auto = load_prompts([str(path)])
    assert len(explicit) == len(auto) == 541 and explicit.report.num_dropped == 0
    assert [r.to_dict() for r in explicit] == [r.to_dict() for r in auto]
    row = explicit[0]
    assert row.id == f"ifeval-{first['key']}" and row.dataset == "ifeval"
    assert row.messages == [{"role": "user", "content": first["prompt"]}]
    gt = json.loads(row.ground_truth)
    assert gt["instruction_id_list"] == first["instruction_id_list"]
    assert all(None not in kw.values() for r in explicit for kw in json.loads(r.ground_truth)["kwargs"])
    # the converted ground truth is what the verifier checks: no commas, 3 highlights, 300+ words
    good = " ".join(["*a* *b* *c*"] + ["word"] * 300)
    assert get_verifier("ifeval")(good, row.ground_truth, prompt=first["prompt"]).value == 1.0
    assert get_verifier("ifeval")(good + ", more", row.ground_truth, prompt=first["prompt"]).value == 0.0
    bad = _write_jsonl(tmp_path / "bad.jsonl", [first, {**first, "kwargs": [{}]}, {**first, "prompt": " "}])
    ps = load_prompts([bad], max_dropped_fraction=1.0)
    assert len(ps) == 1 and ps.report.counts == {"bad_ifeval_row": 2}


def test_train_verifiers_swap_the_reward_of_training_rows_only(shared_data):
    from rlvr.data.prompts import with_verifiers

    ps = load_prompts([str(shared_data / "rlvr_sample" / "rlvr_sample.jsonl")])
    swapped = with_verifiers(ps, {"IFEval": "ifeval_answer"})
    assert swapped.verifier_counts() == {"MATH": 3, "gsm8k": 1, "ifeval_answer": 4}
    assert [r.ground_truth for r in swapped] == [r.ground_truth for r in ps]
    assert with_verifiers(ps, {}) is ps
    with pytest.raises(PromptDataError, match="train_verifiers"):
        with_verifiers(ps, {"ifeval": "no_such_verifier"})


def test_gsm8k_adapter_strips_thousands_separator_and_rejects_missing_marker():
    out = gsm8k_to_row({"question": "How many?", "answer": "Add them.\n#### 1,234"})
    assert out["ground_truth"] == "1234" and out["dataset"] == "gsm8k"
    with pytest.raises(ValueError, match="####"):
        gsm8k_to_row({"question": "How many?", "answer": "no marker 12"})


def test_procedural_source_keeps_generator_ids():
    from core.procedural import generate

    ps = load_prompts(["procedural:mixed?n=20&seed=3"], known_verifiers=KNOWN)
    expected = generate("mixed", 20, 3)
    assert ps.ids() == [r["id"] for r in expected]
    assert [r.ground_truth for r in ps] == [r["ground_truth"] for r in expected]
    assert set(ps.verifier_counts()) <= {"gsm8k", "ifeval"}
    with pytest.raises(PromptDataError, match="procedural:nope"):
        load_prompts(["procedural:nope?n=2"], known_verifiers=KNOWN)


def test_json_and_parquet_files_load_like_jsonl(tmp_path):
    rows = [_good(i, id=f"r{i}") for i in range(5)]
    jsonl = _write_jsonl(tmp_path / "a.jsonl", rows)
    (tmp_path / "a.json").write_text(json.dumps(rows))
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "a.parquet")
    loaded = [load_prompts([p], known_verifiers=KNOWN)
              for p in (jsonl, str(tmp_path / "a.json"), str(tmp_path / "a.parquet"))]
    dicts = [[r.to_dict() for r in ps] for ps in loaded]
    assert dicts[0] == dicts[1] == dicts[2]
    assert loaded[2][3].id == "r3" and loaded[2][3].line == 4


def test_ids_unique_across_sources(tmp_path):
    a = _write_jsonl(tmp_path / "a.jsonl", [_good(1, id="same"), _good(2)])
    ps = load_prompts([a, a], known_verifiers=KNOWN)
    assert ps.ids() == ["same", "a.jsonl:2", "same#2", "a.jsonl:2#2"]


def test_list_of_verifiers_needs_matching_ground_truth_list(tmp_path):
    src = _write_jsonl(tmp_path / "multi.jsonl", [
        _good(1, dataset=["gsm8k", "ifeval"], ground_truth=["2", '{"func_name": "x"}']),
        _good(2, dataset=["gsm8k", "ifeval"], ground_truth="4"),
    ])
    ps = load_prompts([src], known_verifiers=KNOWN, max_dropped_fraction=0.5)
    assert ps[0].verifier_names == ["gsm8k", "ifeval"]
    assert ps.report.counts == {"missing_ground_truth": 1}


# ---- malformed rows ----

def _bad_file(tmp_path) -> str:
    return _write_jsonl(tmp_path / "bad.jsonl", [
        _good(1, id="ok-1"),                                             # line 1
        '{"messages": [{"role": "user", "content": "hi"}], "ground_',    # line 2: bad JSON
        _good(3, id="no-gt", ground_truth=None),                         # line 3
        {k: v for k, v in _good(4, id="no-gt-key").items() if k != "ground_truth"},  # line 4
        _good(5, id="no-msgs", messages=[]),                             # line 5
        _good(6, id="bad-role", messages=[{"role": "robot", "content": "x"}]),  # line 6
        _good(7, id="ends-assistant", messages=[{"role": "user", "content": "q"},
                                                {"role": "assistant", "content": "a"}]),  # line 7
        _good(8, id="no-dataset", dataset=""),                           # line 8
        "[1, 2]",                                                        # line 9: not an object
        _good(10, id="ok-10"),                                           # line 10
    ])


def test_malformed_rows_counted_per_reason_with_ids_and_lines(tmp_path):
    src = _bad_file(tmp_path)
    ps = load_prompts([src], known_verifiers=KNOWN, max_dropped_fraction=0.9)
    assert ps.ids() == ["ok-1", "ok-10"]
    report = ps.report
    assert report.total_rows == 10 and report.num_dropped == 8
    assert report.counts == {"bad_json": 1, "bad_messages": 2, "empty_messages": 1, "missing_dataset": 1,
                             "missing_ground_truth": 2, "not_an_object": 1}
    assert report.ids("missing_ground_truth") == ["no-gt", "no-gt-key"]
    assert report.ids("bad_messages") == ["bad-role", "ends-assistant"]
    assert [d.where for d in report.dropped["bad_json"]] == [f"{src}:2"]
    assert report.to_dict()["ids"]["empty_messages"] == ["no-msgs"]


def test_load_fails_when_dropped_fraction_exceeds_threshold(tmp_path):
    src = _bad_file(tmp_path)
    with pytest.raises(PromptDataError) as err:
        load_prompts([src], known_verifiers=KNOWN)  # default 0.0: any dropped row fails
    msg = str(err.value)
    assert "80.0% dropped" in msg and f"{src}:2" in msg and "bad_json" in msg and "missing_ground_truth" in msg
    with pytest.raises(PromptDataError, match="max_dropped_fraction 70.0%"):
        load_prompts([src], known_verifiers=KNOWN, max_dropped_fraction=0.7)
    assert len(load_prompts([src], known_verifiers=KNOWN, max_dropped_fraction=0.8)) == 2


def test_unknown_verifier_is_an_error_at_load_even_when_drops_are_allowed(tmp_path):
    src = _write_jsonl(tmp_path / "v.jsonl", [_good(1), _good(2, dataset="no_such_checker"), _good(3)])
    with pytest.raises(PromptDataError) as err:
        load_prompts([src], known_verifiers=KNOWN, max_dropped_fraction=1.0)
    assert "'no_such_checker'" in str(err.value) and f"{src}:2" in str(err.value)
    # names are case-insensitive, as in the registry ("MATH" rows use the "math" verifier)
    ok = _write_jsonl(tmp_path / "ok.jsonl", [_good(1, dataset="GSM8K")])
    assert len(load_prompts([ok], known_verifiers=KNOWN)) == 1


def test_default_verifier_check_uses_the_rewards_registry(tmp_path):
    from rewards.base import Score
    from rewards.registry import register

    @register("test-prompts-echo")
    def _echo(response, ground_truth, *, prompt=None):
        return Score(float(response == ground_truth))

    good = _write_jsonl(tmp_path / "g.jsonl", [_good(1, dataset="test-prompts-echo")])
    assert load_prompts([good])[0].dataset == "test-prompts-echo"
    bad = _write_jsonl(tmp_path / "b.jsonl", [_good(1, dataset="test-prompts-missing")])
    with pytest.raises(PromptDataError, match="test-prompts-missing"):
        load_prompts([bad])
    from rewards.registry import get_verifier  # a lookup that raises for unknown names works as the check too

    assert len(load_prompts([good], known_verifiers=get_verifier)) == 1
    with pytest.raises(PromptDataError, match="test-prompts-missing"):
        load_prompts([bad], known_verifiers=get_verifier)


def test_too_long_prompts_dropped_with_tokenizer(tmp_path, tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    long_text = "tell me a long story about rivers " * 40
    src = _write_jsonl(tmp_path / "t.jsonl", [
        _good(1, id="short"), _good(2, id="long", messages=[{"role": "user", "content": long_text}])])
    all_rows = load_prompts([src], tokenizer=tok, known_verifiers=KNOWN)
    n_short, n_long = (r.prompt_tokens for r in all_rows)
    expected = len(tok.apply_chat_template(all_rows[0].messages, tokenize=True, add_generation_prompt=True,
                                           return_dict=True)["input_ids"])
    assert n_short == expected and n_long > n_short
    ps = load_prompts([src], tokenizer=tok, max_prompt_tokens=n_short, max_dropped_fraction=0.5,
                      known_verifiers=KNOWN)
    assert ps.ids() == ["short"] and ps.report.ids("too_long") == ["long"]
    with pytest.raises(PromptDataError, match="too_long"):
        load_prompts([src], tokenizer=tok, max_prompt_tokens=n_short, known_verifiers=KNOWN)
    with pytest.raises(PromptDataError, match="no tokenizer"):
        load_prompts([src], max_prompt_tokens=10, known_verifiers=KNOWN)


def test_missing_file_and_bad_sources(tmp_path):
    with pytest.raises(PromptDataError, match="file not found"):
        load_prompts([str(tmp_path / "nope.jsonl")], known_verifiers=KNOWN)
    with pytest.raises(PromptDataError, match="no prompt sources"):
        load_prompts([], known_verifiers=KNOWN)
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(PromptDataError, match="unsupported file type"):
        load_prompts([str(tmp_path / "x.csv")], known_verifiers=KNOWN)


def test_hub_spec_parsing_and_loading(monkeypatch):
    assert parse_hub_spec("allenai/RLVR-GSM-MATH-IF-Mixed-Constraints") == (
        "allenai/RLVR-GSM-MATH-IF-Mixed-Constraints", None, "train")
    assert parse_hub_spec("hf:openai/gsm8k/main:test[:200]") == ("openai/gsm8k", "main", "test[:200]")
    with pytest.raises(PromptDataError, match="OWNER/NAME"):
        parse_hub_spec("justaname")

    import datasets

    calls = []

    def fake_load_dataset(name, config=None, split=None):  # no network here: check what we ask the hub for
        calls.append((name, config, split))
        return datasets.Dataset.from_list([
            {"question": "2 apples and 3 apples?", "answer": "2+3=5\n#### 5"},
            {"question": "1,000 and 1?", "answer": "#### 1,001"}])

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    ps = load_prompts(["gsm8k:openai/gsm8k/main:test[:2]"], known_verifiers=KNOWN)
    assert calls == [("openai/gsm8k", "main", "test[:2]")]
    assert [r.ground_truth for r in ps] == ["5", "1001"]
    assert ps[1].id == "openai/gsm8k/main:test[:2]:2"


# ---- sampler ----

def _set(n: int):
    return load_prompts([f"procedural:gsm8k?n={n}&seed=0"], known_verifiers=KNOWN)


def test_sampler_epochs_are_seeded_permutations_and_batches_span_epoch_ends():
    ps = _set(10)
    sampler = PromptSampler(ps, batch_size=4, seed=7)
    batches = [[r.id for r in sampler.next_batch()] for _ in range(5)]  # 20 samples = exactly 2 epochs
    assert all(len(b) == 4 for b in batches)
    flat = [i for b in batches for i in b]
    assert Counter(flat[:10]) == Counter(ps.ids()) and Counter(flat[10:]) == Counter(ps.ids())
    assert flat[:10] != flat[10:]  # reshuffled each epoch
    assert sampler.epoch == 1 and sampler.position == 10 and sampler.samples_seen == 20
    again = PromptSampler(ps, batch_size=4, seed=7)
    assert [[r.id for r in again.next_batch()] for _ in range(5)] == batches
    other = PromptSampler(ps, batch_size=4, seed=8)
    assert [[r.id for r in other.next_batch()] for _ in range(5)] != batches


@pytest.mark.parametrize("batch_size,stop_after", [(3, 1), (3, 3), (5, 2), (4, 5), (12, 2)])
def test_sampler_resume_continues_exactly(batch_size, stop_after):
    ps = _set(10)
    full = PromptSampler(ps, batch_size=batch_size, seed=1)
    reference = [[r.id for r in full.next_batch()] for _ in range(8)]

    first = PromptSampler(ps, batch_size=batch_size, seed=1)
    head = [[r.id for r in first.next_batch()] for _ in range(stop_after)]
    state = json.loads(json.dumps(first.state_dict()))  # survives a round trip through a checkpoint file
    resumed = PromptSampler(ps, batch_size=batch_size, seed=1)
    resumed.load_state_dict(state)
    tail = [[r.id for r in resumed.next_batch()] for _ in range(8 - stop_after)]
    assert head + tail == reference


def test_sampler_state_rejects_other_data_or_seed():
    state = PromptSampler(_set(10), batch_size=2, seed=0).state_dict()
    with pytest.raises(ValueError, match="seed"):
        PromptSampler(_set(10), batch_size=2, seed=1).load_state_dict(state)
    with pytest.raises(ValueError, match="num_prompts"):
        PromptSampler(_set(11), batch_size=2, seed=0).load_state_dict(state)
    with pytest.raises(ValueError, match="batch_size"):
        PromptSampler(_set(10), batch_size=0, seed=0)


def test_training_prompts_identical_to_held_out_ones_are_dropped():
    from rlvr.data.prompts import without_held_out

    train = load_prompts("procedural:arithmetic?n=2000&seed=0")
    held = list(load_prompts("procedural:arithmetic?n=128&seed=777"))
    kept, dropped = without_held_out(train, held)
    held_questions = {r.messages[-1]["content"] for r in held}
    assert dropped > 0 and len(kept) == len(train) - dropped
    assert not any(r.messages[-1]["content"] in held_questions for r in kept)
