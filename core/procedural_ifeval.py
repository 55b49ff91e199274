"""The "ifeval" procedural task (core.procedural): a writing task with 1-3 randomised constraints stated in plain
English, its ground truth in Google's IFEval format. Each constraint builder returns (kwargs, sentence); the
instruction ids and kwargs names are Google's (google-research `instruction_following_eval`)."""

from __future__ import annotations

import json
import random
from collections.abc import Callable

TOPICS = ["the history of the bicycle", "why people keep houseplants", "a day at a busy train station",
          "learning a second language", "the water cycle", "a small town bakery", "how volcanoes form",
          "the benefits of walking", "hiking in the mountains", "recycling at home", "the life of honey bees",
          "the first day at a new job", "how to plan a garden", "the invention of the printing press"]
FORMS = ["Write a short blog post about {t}.", "Write a letter to a friend about {t}.",
         "Write a short story about {t}.", "Explain {t} to a ten-year-old.", "Write a product pitch about {t}.",
         "Write an essay about {t}."]
WORDS = ["river", "window", "garden", "orange", "music", "silver", "journey", "morning", "planet", "bridge",
         "coffee", "forest", "lantern", "ocean", "pencil", "thunder"]
END_PHRASES = ["That is all for today.", "Thanks for reading!", "See you next time.", "Those are my thoughts."]
RELATIONS = ["at least", "less than"]


def _c_lowercase(rng):
    return {}, "Write everything in English using only lowercase letters; do not use a single capital letter."


def _c_capital(rng):
    return {}, "Write everything in English using only CAPITAL letters."


def _c_capital_freq(rng):
    rel, f = rng.choice(RELATIONS), rng.randint(2, 10)
    return ({"capital_relation": rel, "capital_frequency": f},
            f"Use fully capitalised words (like THIS) {rel} {f} times.")


def _c_words(rng):
    rel = rng.choice(RELATIONS)
    n = rng.choice([50, 80, 100, 150, 200]) if rel == "at least" else rng.choice([60, 100, 150, 200, 300])
    return {"relation": rel, "num_words": n}, f"Keep the length to {rel} {n} words."


def _c_sentences(rng):
    rel = rng.choice(RELATIONS)
    n = rng.randint(2, 8) if rel == "at least" else rng.randint(4, 12)
    return {"relation": rel, "num_sentences": n}, f"Use {rel} {n} sentences."


def _c_paragraphs(rng):
    n = rng.randint(2, 5)
    return ({"num_paragraphs": n},
            f"Write {n} paragraphs, no more and no fewer, and put the markdown divider *** between "
            "consecutive paragraphs.")


def _c_nth_first_word(rng):
    n = rng.randint(2, 5)
    k = rng.randint(1, n)
    word = rng.choice(WORDS)
    return ({"num_paragraphs": n, "nth_paragraph": k, "first_word": word},
            f"Write {n} paragraphs, no more and no fewer, with a blank line between consecutive paragraphs; "
            f"the first word of paragraph number {k} has to be \"{word}\".")


def _c_bullets(rng):
    n = rng.randint(2, 6)
    return ({"num_bullets": n},
            f"Include a markdown list of {n} bullet points, no more and no fewer, each starting with \"* \".")


def _c_highlights(rng):
    n = rng.randint(1, 4)
    return ({"num_highlights": n},
            f"Emphasise {n} or more parts of the text in markdown italics, like *this part*.")


def _c_title(rng):
    return {}, "Give your text a title and put it inside double angle brackets, for example <<a title>>."


def _c_json(rng):
    return {}, "Return the whole reply as valid JSON (a markdown code fence around it is allowed)."


def _c_sections(rng):
    splitter = rng.choice(["Section", "SECTION", "Part"])
    n = rng.randint(2, 4)
    return ({"section_spliter": splitter, "num_sections": n},
            f"Split the text into {n} sections and start each one with a heading of the form "
            f"\"{splitter} <number>\", e.g. {splitter} 1.")


def _c_placeholders(rng):
    n = rng.randint(1, 4)
    return ({"num_placeholders": n},
            f"Leave {n} or more fill-in-the-blank placeholders written in square brackets, like [name].")


def _c_postscript(rng):
    marker = rng.choice(["P.S.", "P.P.S"])
    return ({"postscript_marker": marker},
            f"Close with a postscript that begins with {marker}")


def _c_no_comma(rng):
    return {}, "Do not use any commas anywhere in the text."


def _c_existence(rng):
    words = rng.sample(WORDS[:8], rng.randint(1, 3))
    return {"keywords": words}, f"Make sure these words appear in the text: {' and '.join(words)}."


def _c_forbidden(rng):
    words = rng.sample(WORDS[8:], rng.randint(1, 3))
    return ({"forbidden_words": words},
            f"Avoid these words completely: {' and '.join(words)}.")


def _c_frequency(rng):
    word, rel, f = rng.choice(WORDS[:8]), rng.choice(RELATIONS), rng.randint(1, 4)
    return ({"keyword": word, "frequency": f, "relation": rel},
            f"Use the word \"{word}\" {rel} {f} times.")


def _c_letter_frequency(rng):
    letter, rel, f = rng.choice("abcdeilmnoprst"), rng.choice(RELATIONS), rng.randint(3, 12)
    return ({"letter": letter, "let_frequency": f, "let_relation": rel},
            f"The letter \"{letter}\" must occur {rel} {f} times in the text.")


def _c_end(rng):
    phrase = rng.choice(END_PHRASES)
    return ({"end_phrase": phrase},
            f"The very last words of your reply must be exactly: {phrase}")


def _c_quotation(rng):
    return {}, "Put the whole reply inside one pair of double quotes."


def _c_two_responses(rng):
    return {}, ("Write two different versions of the reply and separate them with a line of six asterisks "
                "(******), using that separator nowhere else.")


IFEVAL_CONSTRAINTS: dict[str, Callable[[random.Random], tuple[dict, str]]] = {
    "change_case:english_lowercase": _c_lowercase,
    "change_case:english_capital": _c_capital,
    "change_case:capital_word_frequency": _c_capital_freq,
    "length_constraints:number_words": _c_words,
    "length_constraints:number_sentences": _c_sentences,
    "length_constraints:number_paragraphs": _c_paragraphs,
    "length_constraints:nth_paragraph_first_word": _c_nth_first_word,
    "detectable_format:number_bullet_lists": _c_bullets,
    "detectable_format:number_highlighted_sections": _c_highlights,
    "detectable_format:title": _c_title,
    "detectable_format:json_format": _c_json,
    "detectable_format:multiple_sections": _c_sections,
    "detectable_content:number_placeholders": _c_placeholders,
    "detectable_content:postscript": _c_postscript,
    "punctuation:no_comma": _c_no_comma,
    "keywords:existence": _c_existence,
    "keywords:forbidden_words": _c_forbidden,
    "keywords:frequency": _c_frequency,
    "keywords:letter_frequency": _c_letter_frequency,
    "startend:end_checker": _c_end,
    "startend:quotation": _c_quotation,
    "combination:two_responses": _c_two_responses,
}

# Groups of constraints that cannot (or can hardly) hold together; a prompt takes at most one from each group.
_CONFLICT_GROUPS = [
    {"change_case:english_lowercase", "change_case:english_capital", "change_case:capital_word_frequency",
     "startend:end_checker", "detectable_content:postscript"},  # the end phrases and markers contain capitals
    {"length_constraints:number_paragraphs", "length_constraints:nth_paragraph_first_word",
     "detectable_format:multiple_sections", "combination:two_responses", "detectable_format:json_format"},
    {"startend:end_checker", "startend:quotation", "detectable_format:json_format", "combination:two_responses"},
    {"change_case:english_lowercase", "change_case:english_capital",
     "detectable_format:multiple_sections"},  # section markers ("Section 1") are matched case-sensitively
    {"length_constraints:number_words", "length_constraints:number_sentences"},
    {"keywords:existence", "keywords:frequency", "keywords:letter_frequency"},
    {"detectable_format:json_format", "punctuation:no_comma", "detectable_format:number_bullet_lists",
     "detectable_format:title", "detectable_format:number_highlighted_sections"},
]


def _conflicts(a: str, b: str) -> bool:
    return any(a in g and b in g for g in _CONFLICT_GROUPS)


def ifeval_row(rng: random.Random, row_id: str) -> dict:
    task = rng.choice(FORMS).format(t=rng.choice(TOPICS))
    k = rng.choice([1, 1, 2, 2, 3])
    ids: list[str] = []
    for cid in rng.sample(sorted(IFEVAL_CONSTRAINTS), len(IFEVAL_CONSTRAINTS)):
        if len(ids) == k:
            break
        if not any(_conflicts(cid, other) for other in ids):
            ids.append(cid)
    kwargs, sentences = [], []
    for cid in ids:
        kw, sentence = IFEVAL_CONSTRAINTS[cid](rng)
        kwargs.append(kw)
        sentences.append(sentence)
    prompt = " ".join([task, *sentences])
    return {
        "id": row_id,
        "messages": [{"role": "user", "content": prompt}],
        "ground_truth": json.dumps({"instruction_id_list": ids, "kwargs": kwargs}),
        "dataset": "ifeval",
        "meta": {"task": task},
    }
