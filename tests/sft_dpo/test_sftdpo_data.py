"""Chat data: exact assistant-token masks, row formats, truncation, packing, and bad input naming file and line."""

from __future__ import annotations

import json

import pytest
from transformers import AutoTokenizer

from sft_dpo.data import (
    ChatRenderer,
    DataConfig,
    DataError,
    SFTExample,
    load_pair_examples,
    load_sft_examples,
    pack_examples,
)


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def _ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def _write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


CONV = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is 2 + 3?"},
    {"role": "assistant", "content": "The answer is 5."},
    {"role": "user", "content": "And 10 + 1?"},
    {"role": "assistant", "content": "11"},
]


def _expected(tok, only_last):
    """Mask built independently of ChatRenderer: tokenise ChatML pieces separately (stable at special tokens)."""
    pieces = [
        ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is 2 + 3?<|im_end|>\n"
         "<|im_start|>assistant\n", 0),
        ("The answer is 5.<|im_end|>\n", 0 if only_last else 1),
        ("<|im_start|>user\nAnd 10 + 1?<|im_end|>\n<|im_start|>assistant\n", 0),
        ("11<|im_end|>\n", 1),
    ]
    ids, mask = [], []
    for text, m in pieces:
        piece = _ids(tok, text)
        ids += piece
        mask += [m] * len(piece)
    return ids, mask


@pytest.mark.parametrize("only_last", [False, True])
def test_loss_mask_is_exactly_the_assistant_turns(tok, only_last):
    ids, mask = ChatRenderer(tok).encode(CONV, only_last=only_last)
    exp_ids, exp_mask = _expected(tok, only_last)
    assert ids == exp_ids
    assert mask == exp_mask
    target = tok.decode([t for t, m in zip(ids, mask) if m])
    assert target == ("11<|im_end|>\n" if only_last else "The answer is 5.<|im_end|>\n11<|im_end|>\n")


def test_formats_alpaca_sharegpt_messages_agree(tmp_path, tok):
    rows = [
        {"instruction": "Add", "input": "2 and 3", "output": "5"},
        {"conversations": [{"from": "human", "value": "Add\n\n2 and 3"}, {"from": "gpt", "value": "5"}]},
        {"messages": [{"role": "user", "content": "Add\n\n2 and 3"}, {"role": "assistant", "content": "5"}]},
    ]
    exs, report = load_sft_examples(DataConfig(path=str(_write_jsonl(tmp_path / "f.jsonl", rows))), tok)
    assert report.kept == 3 and exs[0] == exs[1] == exs[2]
    assert tok.decode([t for t, m in zip(exs[0].input_ids, exs[0].loss_mask) if m]) == "5<|im_end|>\n"


def test_preference_formats_agree(tmp_path, tok):
    prompt = [{"role": "user", "content": "Hi"}]
    rows = [
        {"chosen": prompt + [{"role": "assistant", "content": "Hello!"}],
         "rejected": prompt + [{"role": "assistant", "content": "Go away"}]},
        {"prompt": "Hi", "chosen": "Hello!", "rejected": "Go away"},
        {"conversations": [{"from": "human", "value": "Hi"}], "chosen": {"from": "gpt", "value": "Hello!"},
         "rejected": {"from": "gpt", "value": "Go away"}},
    ]
    pairs, _ = load_pair_examples(DataConfig(path=str(_write_jsonl(tmp_path / "p.jsonl", rows))), tok)
    assert pairs[0] == pairs[1] == pairs[2]
    p = pairs[0]
    assert tok.decode([t for t, m in zip(p.chosen_ids, p.chosen_mask) if m]) == "Hello!<|im_end|>\n"
    assert tok.decode([t for t, m in zip(p.rejected_ids, p.rejected_mask) if m]) == "Go away<|im_end|>\n"


def test_llamafactory_demo_files_load(shared_data, tok):
    demo = shared_data / "llamafactory_demo"
    sft, _ = load_sft_examples(DataConfig(path=str(demo / "alpaca_en_demo.json"), max_samples=5, max_length=64), tok)
    pairs, _ = load_pair_examples(DataConfig(path=str(demo / "dpo_en_demo.json"), max_samples=5, max_length=256), tok)
    assert len(sft) == 5 and len(pairs) == 5
    assert all(len(e.input_ids) <= 64 and any(e.loss_mask) for e in sft)
    assert all(any(p.chosen_mask) and any(p.rejected_mask) for p in pairs)


def test_truncation_keeps_prompt_and_drops_rows_without_target(tmp_path, tok):
    rows = [{"messages": [{"role": "user", "content": "word " * 40}, {"role": "assistant", "content": "ok " * 30}]},
            {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok " * 30}]}]
    path = _write_jsonl(tmp_path / "t.jsonl", rows)
    exs, report = load_sft_examples(DataConfig(path=str(path), max_length=24), tok)
    assert report.skipped["no target after truncation"] == 1 and len(exs) == 1
    assert len(exs[0].input_ids) == 24 and exs[0].loss_mask[-1] == 1 and exs[0].loss_mask[0] == 0


def test_packing_concatenates_within_max_length():
    exs = [SFTExample([1, 2, 3], [0, 1, 1]), SFTExample([4, 5], [0, 1]), SFTExample([6, 7, 8, 9], [0, 0, 1, 1])]
    packed = pack_examples(exs, max_length=5)
    assert [p.input_ids for p in packed] == [[1, 2, 3, 4, 5], [6, 7, 8, 9]]
    assert [p.loss_mask for p in packed] == [[0, 1, 1, 0, 1], [0, 0, 1, 1]]


GOOD = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}


def test_bad_json_names_file_and_line(tmp_path, tok):
    path = _write_jsonl(tmp_path / "bad.jsonl", [GOOD, GOOD, "{not json", GOOD])
    with pytest.raises(DataError, match=r"bad\.jsonl:3: not valid JSON"):
        load_sft_examples(DataConfig(path=str(path)), tok)
    text = tmp_path / "notjson.json"
    text.write_text("hello, this is not JSON\n")
    with pytest.raises(DataError, match=r"notjson\.json:1: not valid JSON"):
        load_sft_examples(DataConfig(path=str(text)), tok)


def test_row_without_assistant_in_json_array_names_its_line(tmp_path, tok):
    path = tmp_path / "arr.json"
    path.write_text('[\n  {"instruction": "x", "output": "y"},\n  {"messages": [{"role": "user", "content": "q"}]}\n]')
    with pytest.raises(DataError, match=r"arr\.json:3: no assistant turn"):
        load_sft_examples(DataConfig(path=str(path)), tok)


def test_empty_chosen_names_file_and_line(tmp_path, tok):
    rows = [{"prompt": "Hi", "chosen": "Hello", "rejected": "No"}, {"prompt": "Hi", "chosen": "", "rejected": "No"}]
    path = _write_jsonl(tmp_path / "pref.jsonl", rows)
    with pytest.raises(DataError, match=r"pref\.jsonl:2: empty chosen"):
        load_pair_examples(DataConfig(path=str(path)), tok)


def test_skip_mode_counts_and_enforces_max_fraction(tmp_path, tok):
    rows = [GOOD] * 9 + [{"messages": [{"role": "user", "content": "no reply"}]}]
    path = _write_jsonl(tmp_path / "mixed.jsonl", rows)
    exs, report = load_sft_examples(DataConfig(path=str(path), on_bad_row="skip", max_skipped_fraction=0.2), tok)
    assert len(exs) == 9 and report.skipped["no assistant turn with content"] == 1
    assert "mixed.jsonl:10" in report.summary()
    with pytest.raises(DataError, match="too many bad rows"):
        load_sft_examples(DataConfig(path=str(path), on_bad_row="skip", max_skipped_fraction=0.05), tok)


def test_missing_file_and_unknown_format(tmp_path, tok):
    with pytest.raises(DataError, match="data file not found"):
        load_sft_examples(DataConfig(path=str(tmp_path / "nope.jsonl")), tok)
    path = _write_jsonl(tmp_path / "odd.jsonl", [{"text": "plain"}])
    with pytest.raises(DataError, match=r"odd\.jsonl:1: unknown SFT row format"):
        load_sft_examples(DataConfig(path=str(path)), tok)


def test_parquet_rows_are_named_by_index(tmp_path, tok):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "rows.parquet"
    pq.write_table(pa.Table.from_pylist([{"instruction": "a", "output": "b"}, {"instruction": "c", "output": ""}]),
                   path)
    with pytest.raises(DataError, match=r"rows\.parquet row 1: no assistant turn"):
        load_sft_examples(DataConfig(path=str(path)), tok)
    exs, _ = load_sft_examples(DataConfig(path=str(path), on_bad_row="skip", max_skipped_fraction=0.5), tok)
    assert len(exs) == 1
