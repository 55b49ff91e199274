"""The registered IFEval verifiers: Google and Tulu 3 label formats, reward modes, errors, and `rlvr verify`."""

from __future__ import annotations

import json
import re

import pytest

from rewards import get_verifier
from rewards.ifeval import IFEvalConfig, accuracies, check_instructions, evaluate_file, score, tulu

GOOGLE = {
    "instruction_id_list": ["punctuation:no_comma", "keywords:existence", "startend:quotation"],
    "kwargs": [{}, {"keywords": ["river"]}, {}],
}


def _tulu(func_name, **kwargs):
    keys = ["N", "quantifier", "end_phrase", "keyword_list", "word", "forbidden_words", "letter", "i", "first_word",
            "postscript_marker", "options", "section_splitter", "original_prompt"]
    return json.dumps({"func_name": func_name, **{k: None for k in keys}, **kwargs})


def test_registered_names():
    for name in ("ifeval", "ifeval_strict", "ifeval_fraction", "ifeval_loose", "ifeval_hardened", "ifeval_answer"):
        assert callable(get_verifier(name))


@pytest.mark.parametrize("label", [GOOGLE, json.dumps(GOOGLE), [GOOGLE], [json.dumps(GOOGLE)]])
def test_google_format_dict_json_or_list(label):
    verify = get_verifier("ifeval")
    assert verify('"The river runs"', label).value == 1.0
    assert verify('"The river, it runs"', label).value == 0.0


def test_reward_modes():
    response = 'Sure, here:\n"The river runs, fast"'  # comma in every variant; quotation only without line 1
    assert get_verifier("ifeval")(response, GOOGLE).value == 0.0
    assert get_verifier("ifeval_fraction")(response, GOOGLE).value == pytest.approx(1 / 3)  # keyword only
    loose_fraction = score(response, GOOGLE, config=IFEvalConfig(mode="loose", reward="fraction"))
    assert loose_fraction.value == pytest.approx(2 / 3)
    assert "not followed: punctuation:no_comma" in loose_fraction.reason
    assert get_verifier("ifeval_loose")('Sure:\n"The river runs"', GOOGLE).value == 1.0
    assert get_verifier("ifeval")('Sure:\n"The river runs"', GOOGLE).value == 0.0


def test_answer_verifier_scores_the_fraction_of_answers_only():
    """ifeval_answer: the fraction of instructions followed, but 0 for what Google's checkers alone would reward:
    an empty or letterless reply, a loop, a bare repeat of the request."""
    verify = get_verifier("ifeval_answer")
    no_comma = {"instruction_id_list": ["punctuation:no_comma", "keywords:existence"],
                "kwargs": [{}, {"keywords": ["river"]}]}
    prose = "The river runs through the old town and the children play beside it every summer afternoon."
    assert verify(prose, no_comma).value == 1.0
    assert verify(prose.replace("river", "stream"), no_comma).value == 0.5
    assert get_verifier("ifeval_fraction")("", no_comma).value == 0.0  # strict: blank fails everything
    assert get_verifier("ifeval_fraction")("river", no_comma).value == 1.0
    assert verify("river", no_comma).value == 0.0 and "letters" in verify("river", no_comma).reason
    loop = "The river is wide and deep. " * 6
    assert get_verifier("ifeval_fraction")(loop, no_comma).value == 1.0
    assert verify(loop, no_comma).value == 0.0 and "loop" in verify(loop, no_comma).reason
    japanese = {"instruction_id_list": ["language:response_language"], "kwargs": [{"language": "ja"}]}
    digits = "1 2 3 4 5 " * 20
    assert get_verifier("ifeval")(digits, japanese).value == 1.0  # Google: no language detected passes
    assert verify(digits, japanese).value == 0.0
    repeat = {"instruction_id_list": ["combination:repeat_prompt"],
              "kwargs": [{"prompt_to_repeat": "Write a long story about a river and the town around it."}]}
    request = repeat["kwargs"][0]["prompt_to_repeat"]
    assert verify(request, repeat).value == 0.0  # the request alone is no answer
    assert verify(f"{request}\n{prose}", repeat).value == 1.0
    yes_no = {"instruction_id_list": ["detectable_format:constrained_response"], "kwargs": [{}]}
    assert verify("My answer is yes.", yes_no).value == 1.0  # a fixed-phrase answer may be short


def test_answer_verifier_does_not_count_words_copied_from_the_prompt():
    """The hack the first SmolLM2 IFEval run learnt (README, "IFEval"): the prompt's URL and its example highlights
    as the whole reply pass the highlight checker and a plain letter count; with the prompt given, only words the
    prompt does not contain count as answer text."""
    verify = get_verifier("ifeval_answer")
    prompt = ('Write a 300+ word summary of the wikipedia page "https://en.wikipedia.org/wiki/Raymond_III,_Count_of_'
              'Tripoli". Highlight at least 3 sections that has titles in markdown format, for example '
              '*highlighted section part 1*, *highlighted section part 2*, *highlighted section part 3*.')
    label = {"instruction_id_list": ["detectable_format:number_highlighted_sections"], "kwargs": [{"num_highlights": 3}]}
    hack = ("https://en.wikipedia.org/wiki/Raymond_III,_Count_of_Tripoli\n\n*highlighted section part 1*\n"
            "*highlighted section part 2*\n*highlighted section part 3*")
    assert get_verifier("ifeval")(hack, label, prompt=prompt).value == 1.0  # Google's checker alone rewards it
    without_prompt = verify(hack, label)  # without the prompt the example highlights still give it away
    assert without_prompt.value == 0.0 and "placeholder highlight" in without_prompt.reason
    result = verify(hack, label, prompt=prompt)
    assert result.value == 0.0 and "words the prompt does not contain" in result.reason
    answer = ("*Early life* Raymond inherited the county as a boy after his father was murdered. *Regency* He "
              "governed the kingdom for the young leper king. *Hattin* He escaped the battle and died soon after.")
    assert verify(answer, label, prompt=prompt).value == 1.0
    yes_no = {"instruction_id_list": ["detectable_format:constrained_response"], "kwargs": [{}]}
    options = 'Is the sky blue? Answer with one of: "My answer is yes.", "My answer is no.", "My answer is maybe."'
    assert verify("My answer is yes.", yes_no, prompt=options).value == 1.0  # the fixed answers are the prompt's


def test_answer_verifier_refuses_the_hacks_of_run_c():
    """What IFEval run C (README, "IFEval") learnt that the first gate let through: placeholder highlights, a loop
    inside one long sentence, and rows of symbols. Each passes Google's checkers; none is an answer. A real answer
    with the same constraint, a repeated emphasis and a `***` divider passes."""
    verify, google = get_verifier("ifeval_answer"), get_verifier("ifeval")
    highlights = {"instruction_id_list": ["detectable_format:number_highlighted_sections"],
                  "kwargs": [{"num_highlights": 3}]}
    placeholders = "Here is my essay about the sea and its tides. " + "*Highlighted text section* " * 3
    one_sentence_loop = "Sarah's favorite drink is tea and " + "*she* loves *her* favorite breakfast " * 12
    same_highlight = "Cats sleep most of the day, says the *vet*, and eat at night. " + "*vet* " * 5
    for hack in (placeholders, one_sentence_loop, same_highlight):
        assert google(hack, highlights).value == 1.0, hack
        result = verify(hack, highlights)
        assert result.value == 0.0 and result.reason.startswith("no answer"), (hack, result.reason)
    assert "placeholder" in verify(placeholders, highlights).reason
    assert "4-grams" in verify(one_sentence_loop, highlights).reason
    paragraphs = {"instruction_id_list": ["length_constraints:number_paragraphs"], "kwargs": [{"num_paragraphs": 2}]}
    no_comma = {"instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]}
    symbols = "The ocean is vast and the tides follow the moon all year long.\n" + "******\n" * 60
    assert google(symbols, no_comma).value == 1.0
    assert "symbols" in verify(symbols, no_comma).reason and verify(symbols, no_comma).value == 0.0
    essay = ("*Tides* follow the moon, and sailors plan around them. *Currents* carry warm water north.\n***\n"
             "*Tides* also shape the beaches: the *waves* sort the sand by size every day of the year.")
    assert verify(essay, highlights).value == 1.0
    assert verify(essay, paragraphs).value == 1.0


def test_hardened_variant_fails_undetectable_language():
    label = {"instruction_id_list": ["language:response_language"], "kwargs": [{"language": "ja"}]}
    assert get_verifier("ifeval")("12345", label).value == 1.0  # the reference's behaviour
    assert get_verifier("ifeval_hardened")("12345", label).value == 0.0


def test_responses_are_capped_unless_configured_otherwise():
    label = {"instruction_id_list": ["startend:end_checker"], "kwargs": [{"end_phrase": "The end."}]}
    long_response = "word " * 5000 + "The end."  # 25k characters
    assert get_verifier("ifeval")(long_response, label).value == 0.0
    assert score(long_response, label, config=IFEvalConfig(max_chars=None)).value == 1.0


@pytest.mark.parametrize(
    "label,match",
    [
        ("{not json", "not JSON"),
        ({"kwargs": [{}]}, "instruction_id_list"),
        ({"instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}, {}]}, "1 instruction ids but 2 kwargs"),
        ({"instruction_id_list": ["nope:nope"], "kwargs": [{}]}, "unknown IFEval instruction"),
        (_tulu("validate_nothing"), "unknown Tulu IFEval func_name"),
        (_tulu("verify_keyword_frequency", N=2), "missing \\['word'\\]"),
        ([], "empty list"),
        (42, "must be a dict"),
    ],
)
def test_malformed_ground_truth_raises(label, match):
    with pytest.raises(ValueError, match=match):
        get_verifier("ifeval")("some response", label)


def test_tulu_rows_of_the_rlvr_sample(shared_data):
    rows = [json.loads(line) for line in (shared_data / "rlvr_sample" / "rlvr_sample.jsonl").read_text().splitlines()]
    labels = {json.loads(r["ground_truth"])["func_name"]: r["ground_truth"] for r in rows if r["dataset"] == "ifeval"}
    assert set(labels) == {"validate_lowercase", "verify_paragraph_count", "validate_no_commas", "verify_keyword_frequency"}
    verify = get_verifier("ifeval")
    assert verify("ipv6 gives every device an address.", labels["validate_lowercase"]).value == 1.0
    assert verify("IPv6 gives every device an address.", labels["validate_lowercase"]).value == 0.0
    assert verify("\n* * *\n".join(f"paragraph {i}" for i in range(17)), labels["verify_paragraph_count"]).value == 1.0
    assert verify("\n* * *\n".join(f"paragraph {i}" for i in range(16)), labels["verify_paragraph_count"]).value == 0.0
    assert verify("the chow mein was great", labels["validate_no_commas"]).value == 1.0
    assert verify("the chow mein, great", labels["validate_no_commas"]).value == 0.0
    assert verify("Nonsensorial " * 17, labels["verify_keyword_frequency"]).value == 1.0
    assert verify("nonsensorial " * 18, labels["verify_keyword_frequency"]).value == 0.0  # exactly N


# (func_name, kwargs, passing response, failing response): open-instruct's if_functions semantics
TULU_CASES = [
    ("verify_keywords", {"keyword_list": ["Apple", "pie"]}, "apple PIE", "apple"),
    ("verify_keyword_frequency", {"word": "cat", "N": 2}, "Cat, cat and a category", "cat cat cat"),
    ("validate_forbidden_words", {"forbidden_words": ["bad"]}, "all good", "badly"),  # substring, unlike Google
    ("verify_letter_frequency", {"letter": "a", "N": 2}, "bAnana", "banana"),  # case-sensitive, exact
    ("validate_response_language", {"language": "fr"}, "Ceci est une réponse courte écrite en français pour le lecteur.", "12345"),
    ("verify_paragraph_count", {"N": 2}, "A\n  * * *  \nB", "A\n* * *\n* * *\nB"),
    ("validate_word_constraint", {"N": 10, "quantifier": "around"}, "w " * 11, "w " * 12),
    ("validate_word_constraint", {"N": 3, "quantifier": "at most"}, "a b c", "a b c d"),
    ("verify_sentence_constraint", {"N": 2, "quantifier": "at most"}, "One. Two.", "One. Two. Three."),
    ("verify_sentence_constraint", {"N": 3, "quantifier": "around"}, "A. B.", "A."),
    ("validate_paragraphs", {"N": 2, "first_word": "However", "i": 2}, "A\n\nHowever b", "A\n\nhowever b"),
    ("verify_postscript", {"postscript_marker": "P.S."}, "Body P.S. hi", "Body P.S."),
    ("validate_placeholders", {"N": 2}, "[x] and [y]", "[x\ny]"),
    ("verify_bullet_points", {"N": 2}, "* a\n  - b\ntext", "* a"),
    ("validate_title", {}, "<<t>> text", "<t> text"),
    ("validate_choice", {"options": ["My answer is yes.", "My answer is no."]}, "My answer is no.", "Maybe."),
    ("validate_highlighted_sections", {"N": 2}, "*a* and *b*", "*a* and b*"),
    ("validate_sections", {"N": 2, "section_splitter": "Section"}, "SECTION 1 a section 2 b", "Section 1 only"),
    ("validate_json_format", {}, '{"a": 1}', '```json\n{"a": 1}\n```'),  # no fence stripping, unlike Google
    ("validate_repeat_prompt", {"original_prompt": "Say hi."}, "Say hi. Hi!", "say hi. Hi!"),
    ("validate_two_responses", {}, "A ****** B", "A ****** A"),
    ("validate_uppercase", {}, "HELLO 1", "Hello"),
    ("validate_lowercase", {}, "hello 1", "Hello"),
    ("validate_frequency_capital_words", {"N": 2, "quantifier": "at least"}, "USA and NASA", "USA only"),
    ("validate_end", {"end_phrase": "Bye."}, "ok Bye.  \n", "Bye. ok"),  # the answer is stripped first
    ("validate_quotation", {}, '  "x"  ', "x"),
    ("validate_no_commas", {}, "no commas", "a, b"),
]


@pytest.mark.parametrize("func,kwargs,good,bad", TULU_CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(TULU_CASES)])
def test_tulu_functions(func, kwargs, good, bad):
    label = _tulu(func, **kwargs)
    assert tulu.check_constraint(good, label) is True
    assert tulu.check_constraint(bad, label) is False
    assert get_verifier("ifeval")(good, label).value == 1.0


def test_every_tulu_function_is_covered():
    assert {c[0] for c in TULU_CASES} == set(tulu.FUNCTIONS)


def test_tulu_dispatch_takes_the_text_after_the_assistant_marker():
    label = _tulu("validate_quotation")
    assert tulu.check_constraint('<|user|>\nquote this\n<|assistant|>\n"quoted"', label) is True


def test_mixed_list_of_formats_with_fraction():
    label = [json.dumps(GOOGLE), _tulu("validate_lowercase")]
    response = '"the river runs"'
    assert get_verifier("ifeval")(response, label).value == 1.0
    assert get_verifier("ifeval_fraction")('"The river runs"', label).value == pytest.approx(3 / 4)


def test_accuracies_are_the_four_standard_numbers():
    results = [
        check_instructions("this answer, written in plain english for the reader, is all lowercase",
                           ["punctuation:no_comma", "change_case:english_lowercase"], [{}, {}]),
        check_instructions("no comma here at all", ["punctuation:no_comma"], [{}]),
    ]
    acc = accuracies(results)
    assert acc["prompt_level_strict"] == 0.5
    assert acc["inst_level_strict"] == pytest.approx(2 / 3)
    assert set(acc) == {"prompt_level_strict", "prompt_level_loose", "inst_level_strict", "inst_level_loose"}


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_rlvr_verify_prints_the_four_accuracies(shared_data, tmp_path, capsys):
    from rlvr.cli import main

    prompts = shared_data / "ifeval" / "input_data.jsonl"
    rows = [json.loads(line) for line in prompts.read_text().splitlines()]
    responses = []
    for i, row in enumerate(rows):
        text = "a short answer without commas" if i % 3 else 'Sure:\n"A short answer, with a comma."'
        responses.append({"key": row["key"], "response": text} if i % 2 else {"prompt": row["prompt"], "response": text})
    src = _write(tmp_path / "responses.jsonl", responses)

    results, expected = evaluate_file(src, prompts)
    assert len(results) == 541
    assert main(["verify", "--verifier", "ifeval", "--input", str(src), "--prompts", str(prompts), "--workers", "1"]) == 0
    printed = capsys.readouterr().out
    for key, value in expected.items():
        assert re.search(rf"^{key}: {value:.4f}$", printed, flags=re.MULTILINE), (key, printed)
    assert expected["prompt_level_loose"] >= expected["prompt_level_strict"]
    assert f"mean {expected['prompt_level_strict']:.4f}" in printed  # the "ifeval" reward is prompt-level strict


def test_evaluate_file_names_the_unjoinable_line(shared_data, tmp_path):
    src = _write(tmp_path / "r.jsonl", [{"key": 1000, "response": "x"}, {"key": -5, "response": "y"}])
    with pytest.raises(ValueError, match=r"r\.jsonl:2: key -5 not found"):
        evaluate_file(src, shared_data / "ifeval" / "input_data.jsonl")


def test_validate_ground_truth_for_data_loading():
    from rewards.ifeval import validate_ground_truth

    assert validate_ground_truth([json.dumps(GOOGLE), _tulu("validate_lowercase")]) == 4
    with pytest.raises(ValueError, match="keywords:existence"):
        validate_ground_truth({"instruction_id_list": ["keywords:existence"], "kwargs": [{"keywords": ["("]}]})
    with pytest.raises(ValueError, match="missing"):
        validate_ground_truth(_tulu("validate_end"))


def test_importing_the_package_stays_light():
    import subprocess
    import sys

    code = "import sys, rewards.ifeval; print(sorted(m for m in ('nltk', 'langdetect', 'numpy', 'torch', 'ray') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_procedural_ifeval_rows_validate():
    """The procedural generator's Google-format JSON ground truths build their checkers (a data error would
    raise here, not as zero rewards during training)."""
    procedural = pytest.importorskip("core.procedural")
    from rewards.ifeval import validate_ground_truth

    rows = procedural.generate("ifeval", 300, 0)
    assert sum(validate_ground_truth(r["ground_truth"]) for r in rows) >= 300
    assert 0.0 <= get_verifier("ifeval_fraction")("A short answer.", rows[0]["ground_truth"]).value <= 1.0
