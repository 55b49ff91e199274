"""Every Google IFEval instruction type: cases that pass and fail, strict and loose, from the reference semantics
(google-research `instruction_following_eval/instructions.py` + `evaluation_lib.py`)."""

from __future__ import annotations

import json

import pytest

from rewards.ifeval import build_checker, check_instructions, instruction_ids, loose_variants

# (instruction id, kwargs, response, strict, loose)
CASES = [
    # keywords: regex search, case-insensitive; loose may drop "*" markers
    ("keywords:existence", {"keywords": ["apple", "Banana"]}, "I like APPLE and banana.", True, True),
    ("keywords:existence", {"keywords": ["apple", "Banana"]}, "I like apple only.", False, False),
    ("keywords:existence", {"keywords": ["apple", "Banana"]}, "app*le and banana", False, True),
    # frequency counts substrings ("category" contains "cat")
    ("keywords:frequency", {"keyword": "cat", "frequency": 3, "relation": "at least"}, "cat cat category", True, True),
    ("keywords:frequency", {"keyword": "cat", "frequency": 3, "relation": "at least"}, "cat and dog", False, False),
    ("keywords:frequency", {"keyword": "cat", "frequency": 2, "relation": "less than"}, "Cat.\nThe cat sat.", False, True),
    # forbidden words match whole words only
    ("keywords:forbidden_words", {"forbidden_words": ["bad"]}, "This is badly done.", True, True),
    ("keywords:forbidden_words", {"forbidden_words": ["bad"]}, "This is BAD.", False, False),
    ("keywords:forbidden_words", {"forbidden_words": ["bad"]}, "Sure, no bad words:\nAll good here.", False, True),
    # letters: case-insensitive count of one character
    ("keywords:letter_frequency", {"letter": "z", "let_frequency": 2, "let_relation": "at least"}, "Zebra zone", True, True),
    ("keywords:letter_frequency", {"letter": "z", "let_frequency": 2, "let_relation": "at least"}, "zebra", False, False),
    ("keywords:letter_frequency", {"letter": "z", "let_frequency": 2, "let_relation": "less than"}, "Zz\nplain text", False, True),
    ("keywords:letter_frequency", {"letter": "#", "let_frequency": 1, "let_relation": "less than"}, "no hash here", True, True),
    ("keywords:letter_frequency", {"letter": "#", "let_frequency": 1, "let_relation": "less than"}, "a #tag", False, False),
    # language (langdetect, seed 0); an undetectable text counts as followed, as in the reference
    ("language:response_language", {"language": "fr"}, "Ceci est une réponse courte écrite en français pour le lecteur.", True, True),
    ("language:response_language", {"language": "fr"}, "This is a short answer written in plain English for you.", False, False),
    ("language:response_language", {"language": "fr"}, "12345 !!!", True, True),
    # case + English
    ("change_case:english_capital", {}, "HELLO THERE, THIS IS A SHORT ANSWER WRITTEN IN ENGLISH.", True, True),
    ("change_case:english_capital", {}, "Hello there, this is English.", False, False),
    ("change_case:english_capital", {}, "Sure:\nHELLO THERE, THIS IS A SHORT ANSWER WRITTEN IN ENGLISH.", False, True),
    ("change_case:english_capital", {}, "CECI EST UNE RÉPONSE COURTE ÉCRITE EN FRANÇAIS POUR LE LECTEUR.", False, False),
    ("change_case:english_lowercase", {}, "hello there, this is a short answer written in english.", True, True),
    ("change_case:english_lowercase", {}, "Hello there, this is English.", False, False),
    ("change_case:english_lowercase", {}, "Title Line\nhello there, this is a short answer written in english.", False, True),
    # capital words via nltk.word_tokenize: "I" is a capital word, "The" is not
    ("change_case:capital_word_frequency", {"capital_frequency": 2, "capital_relation": "at least"}, "The USA and NASA agree.", True, True),
    ("change_case:capital_word_frequency", {"capital_frequency": 2, "capital_relation": "at least"}, "I am here.", False, False),
    ("change_case:capital_word_frequency", {"capital_frequency": 2, "capital_relation": "less than"}, "AI AND ML\nok fine", False, True),
    # sentences by NLTK punkt: "Dr." and "p.m." do not end sentences
    ("length_constraints:number_sentences", {"num_sentences": 2, "relation": "less than"}, "One sentence only.", True, True),
    ("length_constraints:number_sentences", {"num_sentences": 2, "relation": "less than"}, "Dr. Smith came. He left.", False, False),
    ("length_constraints:number_sentences", {"num_sentences": 3, "relation": "at least"}, "Dr. Smith came at 3 p.m. today. He left. Bye.", True, True),
    ("length_constraints:number_sentences", {"num_sentences": 3, "relation": "at least"}, "Mr. Jones went to Washington. He liked it.", False, False),
    ("length_constraints:number_sentences", {"num_sentences": 2, "relation": "less than"}, "Intro sentence here.\nMain answer.", False, True),
    # words are \w+ runs: "don't" is two
    ("length_constraints:number_words", {"num_words": 5, "relation": "at least"}, "one two three four five", True, True),
    ("length_constraints:number_words", {"num_words": 4, "relation": "at least"}, "don't stop", False, False),
    ("length_constraints:number_words", {"num_words": 4, "relation": "less than"}, "Title line with words\nshort one", False, True),
    # paragraphs split on *** ; empty leading/trailing pieces are dropped, an empty middle one fails
    ("length_constraints:number_paragraphs", {"num_paragraphs": 3}, "A\n***\nB\n***\nC", True, True),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 3}, "***\nA\n***\nB\n***\nC\n***", True, True),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 3}, "A\n***\n***\nC", False, False),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 3}, "Intro\n***\nA\n***\nB\n***\nC", False, True),
    # nth paragraph's first word, punctuation and leading quotes stripped
    ("length_constraints:nth_paragraph_first_word", {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "However"}, "Intro text.\n\nHowever, this matters.", True, True),
    ("length_constraints:nth_paragraph_first_word", {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "however"}, 'Intro.\n\n"However" it is.', True, True),
    ("length_constraints:nth_paragraph_first_word", {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "however"}, "Intro.\n\nBut no.", False, False),
    ("length_constraints:nth_paragraph_first_word", {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "however"}, "Intro.\n\nHowever.\n\nThird.", False, True),  # loose drops the last line
    ("length_constraints:nth_paragraph_first_word", {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "however"}, "Intro.\n\n*However* this", False, True),
    # placeholders: [..] on one line
    ("detectable_content:number_placeholders", {"num_placeholders": 2}, "[name] and [address]", True, True),
    ("detectable_content:number_placeholders", {"num_placeholders": 2}, "[a\nb] [c]", False, False),
    # postscript: P.S. / P.P.S patterns, case-insensitive, anywhere
    ("detectable_content:postscript", {"postscript_marker": "P.S."}, "Body.\n\nP.S. call me", True, True),
    ("detectable_content:postscript", {"postscript_marker": "P.S."}, "Body.\n\np.s. lower case", True, True),
    ("detectable_content:postscript", {"postscript_marker": "P.S."}, "Body only. PS no dots", False, False),
    ("detectable_content:postscript", {"postscript_marker": "P.P.S"}, "Body.\nP. P. S extra", True, True),
    ("detectable_content:postscript", {"postscript_marker": "P.P.S"}, "Body.\nP.S. only", False, False),
    # bullets: lines starting with "* " (not "**") or "-"
    ("detectable_format:number_bullet_lists", {"num_bullets": 2}, "* one\n* two", True, True),
    ("detectable_format:number_bullet_lists", {"num_bullets": 2}, "**bold**\n* one\n- two", True, True),
    ("detectable_format:number_bullet_lists", {"num_bullets": 2}, "* one\n- two\n* three", False, True),
    ("detectable_format:number_bullet_lists", {"num_bullets": 2}, "* a\n* b\n- c\n* d\n* e", False, False),
    ("detectable_format:constrained_response", {}, "My answer is yes.", True, True),
    ("detectable_format:constrained_response", {}, "My answer is Yes.", False, False),
    # highlights: non-empty *x*; a **bold** span counts once (as a double highlight)
    ("detectable_format:number_highlighted_sections", {"num_highlights": 2}, "*one* and *two*", True, True),
    ("detectable_format:number_highlighted_sections", {"num_highlights": 2}, "*one* and * *", False, False),
    ("detectable_format:number_highlighted_sections", {"num_highlights": 1}, "**bold**", True, True),
    ("detectable_format:number_highlighted_sections", {"num_highlights": 2}, "**bold**", False, False),
    # sections: the splitter is case-sensitive
    ("detectable_format:multiple_sections", {"section_spliter": "Section", "num_sections": 2}, "Section 1\nA\nSection 2\nB", True, True),
    ("detectable_format:multiple_sections", {"section_spliter": "Section", "num_sections": 2}, "SECTION 1\nA\nSECTION 2\nB", False, False),
    ("detectable_format:json_format", {}, '{"a": 1}', True, True),
    ("detectable_format:json_format", {}, '```json\n{"a": [1, 2]}\n```', True, True),
    ("detectable_format:json_format", {}, 'Here is JSON:\n{"a": 1}', False, True),
    ("detectable_format:json_format", {}, "[" * 5000 + "]" * 5000, False, False),  # the reference crashes here
    ("detectable_format:title", {}, "<<My Title>>\ntext", True, True),
    ("detectable_format:title", {}, "<< >> no title", False, False),
    ("detectable_format:title", {}, "<<a\nb>>", False, False),
    ("combination:two_responses", {}, "A\n******\nB", True, True),
    ("combination:two_responses", {}, "A\n******\nA", False, False),
    ("combination:two_responses", {}, "A ****** B ****** C", False, False),
    ("combination:repeat_prompt", {"prompt_to_repeat": "Write a poem."}, "write a poem. Here it is", True, True),
    ("combination:repeat_prompt", {"prompt_to_repeat": "Write a poem."}, "Sure. Write a poem.", False, False),
    ("combination:repeat_prompt", {"prompt_to_repeat": "Write a poem."}, "Sure!\nWrite a poem. Roses are red.", False, True),
    ("startend:end_checker", {"end_phrase": "Any other questions?"}, "Done. Any other questions?", True, True),
    ("startend:end_checker", {"end_phrase": "Any other questions?"}, '"Done. any other questions?"', True, True),
    ("startend:end_checker", {"end_phrase": "Any other questions?"}, "Any other questions? Bye", False, False),
    ("startend:end_checker", {"end_phrase": "Any other questions?"}, "Text. Any other questions?\nP.S. hi", False, True),
    ("startend:quotation", {}, '"quoted"', True, True),
    ("startend:quotation", {}, '"', False, False),
    ("startend:quotation", {}, 'Here:\n"quoted text"', False, True),
    ("punctuation:no_comma", {}, "no commas here", True, True),
    ("punctuation:no_comma", {}, "a, b", False, False),
    ("punctuation:no_comma", {}, "Hello, friend\nno commas here", False, True),
]


def _ids(case):
    return f"{case[0]}-{case[3]}-{case[4]}-{case[2][:20]}"


@pytest.mark.parametrize("iid,kwargs,response,strict,loose", CASES, ids=[_ids(c) for c in CASES])
def test_instruction_verdicts(iid, kwargs, response, strict, loose):
    res = check_instructions(response, [iid], [kwargs])
    assert (res.strict, res.loose) == ([strict], [loose])
    assert (res.prompt_strict, res.prompt_loose) == (strict, loose)


def test_every_instruction_type_has_passing_and_failing_cases():
    assert len(instruction_ids()) == 25
    for iid in instruction_ids():
        verdicts = {(c[3], c[4]) for c in CASES if c[0] == iid}
        assert (True, True) in verdicts and (False, False) in verdicts, iid


def test_language_failure_switch():
    """The reference counts undetectable text as following the language/English-case instructions; the RL switch
    turns that off."""
    for iid, kwargs, text in [
        ("language:response_language", {"language": "de"}, "12345 !!!"),
        ("change_case:english_lowercase", {}, "\U0001d41a\U0001d41b 1 2"),  # mathematical bold "ab": cased, no n-grams
        ("change_case:english_capital", {}, "\U0001d400\U0001d401 1 2"),
    ]:
        assert check_instructions(text, [iid], [kwargs]).strict == [True]
        assert check_instructions(text, [iid], [kwargs], lang_failure_passes=False).strict == [False]


def test_blank_response_follows_nothing():
    res = check_instructions("  \n ", ["punctuation:no_comma", "keywords:forbidden_words"], [{}, {"forbidden_words": ["x"]}])
    assert res.strict == [False, False] and res.loose == [False, False]


def test_several_instructions_keep_their_order():
    res = check_instructions(
        "Hello, world.\nthis second line is plainly written in english for the world",
        ["punctuation:no_comma", "change_case:english_lowercase", "keywords:existence"],
        [{}, {}, {"keywords": ["world"]}],
    )
    assert res.instruction_ids == ["punctuation:no_comma", "change_case:english_lowercase", "keywords:existence"]
    assert res.strict == [False, False, True]
    assert res.loose == [True, True, True]  # dropping the first line removes the comma and the capital
    assert not res.prompt_strict and res.prompt_loose


def test_loose_variants_are_the_references_eight_without_blanks_or_repeats():
    assert loose_variants("*a*\nb\nc") == ["*a*\nb\nc", "a\nb\nc", "b\nc", "*a*\nb", "b", "a\nb"]
    assert loose_variants("one line") == ["one line"]


def test_none_kwargs_are_ignored_like_the_hf_copy_of_ifeval():
    kwargs = {"num_words": 3, "relation": "at least", "keywords": None, "language": None}
    assert check_instructions("one two three", ["length_constraints:number_words"], [kwargs]).strict == [True]


@pytest.mark.parametrize(
    "iid,kwargs",
    [
        ("keywords:unknown", {}),
        ("length_constraints:number_words", {"num_words": 3}),  # relation missing: the reference picks at random
        ("length_constraints:number_words", {"num_words": 3, "relation": "at most"}),
        ("keywords:letter_frequency", {"letter": "ab", "let_frequency": 1, "let_relation": "at least"}),
        ("length_constraints:nth_paragraph_first_word", {"num_paragraphs": 2, "nth_paragraph": 3, "first_word": "a"}),
        ("punctuation:no_comma", {"bogus": 1}),
        ("combination:repeat_prompt", {"prompt_to_repeat": ""}),
    ],
)
def test_malformed_instructions_raise_naming_the_instruction(iid, kwargs):
    with pytest.raises(ValueError, match=iid.split(":")[0]):
        build_checker(iid, kwargs)


def test_all_541_ifeval_rows_build_and_check(shared_data):
    rows = [json.loads(line) for line in (shared_data / "ifeval" / "input_data.jsonl").read_text().splitlines()]
    assert len(rows) == 541
    seen = set()
    for row in rows:
        for iid, kwargs in zip(row["instruction_id_list"], row["kwargs"]):
            assert callable(build_checker(iid, kwargs))
            seen.add(iid)
        res = check_instructions("A short answer, in English.\n*Done*", row["instruction_id_list"], row["kwargs"],
                                 prompt=row["prompt"])
        assert len(res.strict) == len(res.loose) == len(row["instruction_id_list"])
        assert all(lo or not st for st, lo in zip(res.strict, res.loose))  # strict implies loose
    assert seen == set(instruction_ids())
