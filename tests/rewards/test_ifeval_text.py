"""IFEval text primitives: offline NLTK punkt/word tokenisation, langdetect-identical detection, and the linear scans
that replace the reference's quadratic regexes (compared with those regexes on random text)."""

from __future__ import annotations

import random
import re

import pytest

from rewards.ifeval import fastdetect
from rewards.ifeval import text as T
from rewards.ifeval.instructions import build_checker, count_bullets, count_placeholders, has_title


def test_punkt_parameters_are_nltks_english_model():
    params = T.punkt_parameters()
    assert {"dr", "mr", "p.m", "u.s", "jan"} <= params.abbrev_types
    assert len(params.ortho_context) > 10_000 and params.ortho_context["the"] > 0
    assert params.ortho_context["never-seen-type"] == 0  # a defaultdict(int), as NLTK loads it


@pytest.mark.parametrize(
    "text,expected",
    [
        ("Dr. Smith went home. He was tired.", ["Dr. Smith went home.", "He was tired."]),
        ("It is 3.5 p.m. now! OK?", ["It is 3.5 p.m. now!", "OK?"]),
        ("Mr. Jones went to Washington. He liked the U.S. capital.",
         ["Mr. Jones went to Washington.", "He liked the U.S. capital."]),
        ("No final stop", ["No final stop"]),
        ("", []),
    ],
)
def test_sentences_follow_nltk_punkt(text, expected):
    assert list(T.sentences(text)) == expected
    assert T.count_sentences(text) == len(expected)


def test_word_tokenize_is_nltks_treebank_after_punkt():
    assert list(T.word_tokenize("I can't go. He said \"hi\".")) == [
        "I", "ca", "n't", "go", ".", "He", "said", "``", "hi", "''", ".",
    ]
    # hyphenated words stay one token; the final period of each sentence splits off
    assert list(T.word_tokenize("A well-known U.S. firm. Done.")) == ["A", "well-known", "U.S.", "firm", ".", "Done", "."]


def test_count_words_is_backslash_w_runs():
    assert T.count_words("don't stop-now, 3.5 ok") == 7


def _language_texts() -> list[str]:
    rng = random.Random(7)
    samples = [
        "Ceci est une réponse courte écrite en français pour le lecteur.",
        "Dies ist eine kurze Antwort, die auf Deutsch für den Leser geschrieben wurde.",
        "Это короткий ответ, написанный на русском языке для читателя.",
        "これは読者のために日本語で書かれた短い答えです。",
        "이것은 독자를 위해 한국어로 쓴 짧은 답변입니다.",
        "यह पाठक के लिए हिंदी में लिखा गया एक छोटा उत्तर है।",
        "Đây là một câu trả lời ngắn được viết bằng tiếng Việt cho người đọc.",
        "هذه إجابة قصيرة مكتوبة باللغة العربية للقارئ.",
        "This is a short answer written in plain English for the reader, with NASA and the USA.",
        "Esta es una respuesta corta escrita en español para el lector.",
    ]
    mixed = [rng.choice(samples)[: rng.randint(3, 40)] + "  " + rng.choice(samples)[rng.randint(0, 20):] for _ in range(20)]
    edge = ["a", "OK", "ABC def GHI", "see https://example.org/a?b=1 and me@mail.com", "Tiê\u0301ng Việt", "x" * 10_500]
    return samples + mixed + edge


def test_fastdetect_equals_langdetect_probabilities_included():
    import langdetect
    from langdetect import DetectorFactory

    DetectorFactory.seed = 0
    for text in _language_texts():
        expected = [(lang.lang, lang.prob) for lang in langdetect.detect_langs(text)]
        assert fastdetect.probabilities(text) == expected, text[:40]
        assert fastdetect.detect(text) == langdetect.detect(text)


def test_fastdetect_returns_none_where_langdetect_raises():
    import langdetect

    for text in ["12345 !!!", "", "   ", "--- ***"]:
        with pytest.raises(langdetect.LangDetectException):
            langdetect.detect(text)
        assert fastdetect.detect(text) is None
        assert T.detect_language(text) is None


def _random_text(rng: random.Random, alphabet: str, n: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


def test_linear_scans_equal_the_reference_regexes_on_random_text():
    rng = random.Random(0)
    for _ in range(3000):
        t = _random_text(rng, "[]*-<> \n\ta.ps", rng.randint(0, 40))
        assert count_placeholders(t) == len(re.findall(r"\[.*?\]", t)), repr(t)
        bullets = len(re.findall(r"^\s*\*[^\*].*$", t, flags=re.MULTILINE)) + len(
            re.findall(r"^\s*-.*$", t, flags=re.MULTILINE)
        )
        assert count_bullets(t) == bullets, repr(t)
        titles = re.findall(r"<<[^\n]+>>", t)
        assert has_title(t) == any(x.lstrip("<").rstrip(">").strip() for x in titles), repr(t)
        for marker, pattern in (("P.S.", r"\s*p\.\s?s\..*$"), ("P.P.S", r"\s*p\.\s?p\.\s?s.*$")):
            expected = bool(re.findall(pattern, t.lower(), flags=re.MULTILINE))
            assert build_checker("detectable_content:postscript", {"postscript_marker": marker})(t) == expected


def test_pathological_inputs_are_fast_enough_to_finish():
    """The reference's regexes take seconds on these 20k-character inputs; the scans are linear (no timing
    assertion: the test only has to finish)."""
    assert count_placeholders("[" * 20_000) == 0
    assert count_bullets("\n" * 20_000) == 0
    assert has_title("<<" * 10_000) is False
    assert build_checker("detectable_content:postscript", {"postscript_marker": "P.S."})(" " * 20_000) is False


def test_caches_do_not_change_answers():
    text = "Dr. Smith arrived. THE END."
    first = (T.sentences(text), T.word_tokenize(text))
    T.clear_caches()
    assert (T.sentences(text), T.word_tokenize(text)) == first
