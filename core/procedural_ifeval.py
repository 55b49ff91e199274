"""The "ifeval" procedural task (core.procedural): a request (a writing task or a question, on one of many topics)
with 1-3 randomised constraints stated in plain English, its ground truth in Google's IFEval format. It covers all
25 instruction families of Google's IFEval (google-research `instruction_following_eval`), with Google's
instruction ids and kwargs names, so the "ifeval" verifiers check it; the wording, topics and tasks are this
module's own (none is taken from IFEval's prompts), and every constraint has several phrasings so that a policy
learns the instruction rather than one sentence.

Each constraint builder returns (kwargs, sentence). A prompt takes at most one constraint from each conflict group
(constraints that cannot hold together, or hardly); `detectable_format:constrained_response` (a fixed answer
phrase to a yes/no question) stands alone; `combination:repeat_prompt` always comes last, and the text to repeat
is everything before it.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable

TOPICS = ["the history of the bicycle", "why people keep houseplants", "a day at a busy train station",
          "learning a second language", "the water cycle", "a small town bakery", "how volcanoes form",
          "the benefits of walking", "hiking in the mountains", "recycling at home", "the life of honey bees",
          "the first day at a new job", "how to plan a garden", "the invention of the printing press",
          "saving money on groceries", "the moon landing", "why cats purr", "a rainy afternoon in the city",
          "how bread rises", "the rules of chess", "public libraries", "a lighthouse keeper", "playing the piano",
          "electric cars", "the night sky", "making friends as an adult", "a family road trip", "street food",
          "how rainbows form", "the importance of sleep", "an old clock shop", "learning to swim",
          "the ocean tides", "a school science fair", "desert animals", "remote work", "a village festival",
          "how vaccines work", "keeping a journal", "the first computers", "a snowy morning", "fixing a flat tyre",
          "the Roman roads", "a visit to the dentist", "growing tomatoes", "board games with friends",
          "the migration of birds", "a museum of modern art", "how maps are made", "cooking rice",
          "a job interview", "the Great Wall of China", "volunteering at a shelter", "solar panels",
          "a birthday surprise", "the sound of thunder", "learning to code", "coral reefs", "a lost umbrella",
          "the price of coffee"]
WRITING_FORMS = ["Write a short blog post about {t}.", "Write a letter to a friend about {t}.",
                 "Write a short story about {t}.", "Explain {t} to a ten-year-old.",
                 "Write a product pitch connected to {t}.", "Write an essay about {t}.", "Write a poem about {t}.",
                 "Write a speech about {t}.", "Write a diary entry about {t}.",
                 "Give me some advice about {t}.", "Describe {t} for a travel magazine.",
                 "Write an email to your manager about {t}.", "Write a review of a book about {t}.",
                 "Write a short news report about {t}.", "Write a funny limerick about {t}.",
                 "Write a cover letter for a job that has to do with {t}.",
                 "Write a dialogue between two people talking about {t}.",
                 "Summarize what most people know about {t}.", "Write the opening of a novel about {t}.",
                 "Write a riddle about {t} and then give its answer.", "Write an advertisement about {t}.",
                 "List some facts about {t}.", "Write a song about {t}.", "Write a rap about {t}.",
                 "Write a motivational note about {t}."]
QUESTION_FORMS = ["What do you think about {t}?", "Why do people care about {t}?",
                  "What is the most interesting thing about {t}?", "How would you teach someone about {t}?",
                  "What are the pros and cons of {t}?", "Can you tell me about {t}?"]
YES_NO_QUESTIONS = ["Is it a good idea to learn {t}-related skills as a teenager?",
                    "Would you recommend reading about {t}?", "Is {t} something a child could understand?",
                    "Do most people enjoy {t}?", "Is {t} more important today than fifty years ago?",
                    "Could {t} be a good topic for a school project?"]
WORDS = ["river", "window", "garden", "orange", "music", "silver", "journey", "morning", "planet", "bridge",
         "coffee", "forest", "lantern", "ocean", "pencil", "thunder", "history", "simple", "bright", "future",
         "memory", "kitchen", "yellow", "island"]
END_PHRASES = ["That is all for today.", "Thanks for reading!", "See you next time.", "Those are my thoughts.",
               "Until we meet again.", "Stay curious.", "Have a great day!", "The end."]
RELATIONS = ["at least", "less than"]
# ISO 639-1 codes langdetect knows (the checker's), with the names the prompt uses
LANGUAGES = {"fr": "French", "es": "Spanish", "de": "German", "it": "Italian", "pt": "Portuguese",
             "nl": "Dutch", "ru": "Russian", "hi": "Hindi", "ar": "Arabic", "ko": "Korean", "vi": "Vietnamese",
             "sw": "Swahili", "fi": "Finnish", "tr": "Turkish", "pl": "Polish", "bn": "Bengali", "ja": "Japanese"}


def _pick(rng: random.Random, *phrasings: str) -> str:
    return rng.choice(phrasings)


# --- one builder per instruction id ------------------------------------------------------------------------------

def _c_lowercase(rng):
    return {}, _pick(rng, "Write everything in English using only lowercase letters; do not use a single capital "
                          "letter.",
                     "Use no capital letters at all: the whole reply is English text in lowercase.",
                     "make sure your whole answer is in lowercase english, with no capital letters at all.")


def _c_capital(rng):
    return {}, _pick(rng, "Write everything in English using only CAPITAL letters.",
                     "Type the whole English reply in block capitals, every letter uppercase.",
                     "Reply in English, and make every single letter of your reply uppercase.")


def _c_capital_freq(rng):
    rel, f = rng.choice(RELATIONS), rng.randint(2, 12)
    return ({"capital_relation": rel, "capital_frequency": f},
            _pick(rng, f"Use fully capitalised words (like THIS) {rel} {f} times.",
                  f"Write {rel} {f} words entirely in capitals, LIKE THIS.",
                  f"Count the words you spell in full capitals: there must be {rel} {f} of them."))


def _c_language(rng):
    code = rng.choice(sorted(LANGUAGES))
    name = LANGUAGES[code]
    return ({"language": code},
            _pick(rng, f"Write the reply in {name} only.", f"Use {name}, not English, for the entire answer.",
                  f"Answer entirely in {name}."))


def _c_words(rng):
    rel = rng.choice(RELATIONS)
    n = rng.choice([40, 60, 80, 100, 150, 200, 250]) if rel == "at least" else rng.choice([50, 80, 100, 150, 200, 300])
    return ({"relation": rel, "num_words": n},
            _pick(rng, f"Keep the length to {rel} {n} words.", f"Aim for {rel} {n} words.",
                  f"Spend {rel} {n} words on it.", f"The reply should be {rel} {n} words long."))


def _c_sentences(rng):
    rel = rng.choice(RELATIONS)
    n = rng.randint(2, 10) if rel == "at least" else rng.randint(3, 12)
    return ({"relation": rel, "num_sentences": n},
            _pick(rng, f"Use {rel} {n} sentences.", f"Make it {rel} {n} sentences long.",
                  f"Write {rel} {n} sentences in total."))


def _c_paragraphs(rng):
    n = rng.randint(2, 5)
    return ({"num_paragraphs": n},
            _pick(rng, f"Write {n} paragraphs, no more and no fewer, and put the markdown divider *** between "
                       "consecutive paragraphs.",
                  f"Exactly {n} paragraphs, please, with *** on its own line between each pair.",
                  f"Your reply must have {n} paragraphs, each separated from the next by a line with ***."))


def _c_nth_first_word(rng):
    n = rng.randint(2, 5)
    k = rng.randint(1, n)
    word = rng.choice(WORDS)
    return ({"num_paragraphs": n, "nth_paragraph": k, "first_word": word},
            _pick(rng, f"Write {n} paragraphs, no more and no fewer, with a blank line between consecutive "
                       f"paragraphs; the first word of paragraph number {k} has to be \"{word}\".",
                  f"Use {n} paragraphs split by empty lines, and begin paragraph {k} with the word {word}."))


def _c_bullets(rng):
    n = rng.randint(2, 6)
    return ({"num_bullets": n},
            _pick(rng, f"Include a markdown list of {n} bullet points, no more and no fewer, each starting with "
                       "\"* \".",
                  f"Put exactly {n} markdown bullets (lines beginning with \"* \") in the reply.",
                  f"Give exactly {n} bullet points in markdown format (lines that start with * )."))


def _c_constrained(rng):
    return {}, _pick(rng, "State your verdict as one sentence: \"My answer is yes.\", or else \"My answer is no.\", "
                          "or else \"My answer is maybe.\"",
                     "Give your verdict in exactly one of three sentences: \"My answer is yes.\", else \"My "
                     "answer is no.\", else \"My answer is maybe.\"")


def _c_highlights(rng):
    n = rng.randint(1, 5)
    return ({"num_highlights": n},
            _pick(rng, f"Emphasise {n} or more parts of the text in markdown italics, like *this part*.",
                  f"Mark at least {n} phrases as italic by wrapping them in single asterisks, *like so*.",
                  f"Use markdown to highlight at least {n} phrases, for example *an important phrase*."))


def _c_title(rng):
    return {}, _pick(rng, "Give your text a title and put it inside double angle brackets, for example <<a title>>.",
                     "Open with a heading placed between << and >>, for instance <<Notes on the topic>>.",
                     "Start with a title in double angle brackets, like <<title of the text>>.")


def _c_json(rng):
    return {}, _pick(rng, "Return the whole reply as valid JSON (a markdown code fence around it is allowed).",
                     "Reply with nothing but one JSON object (you may put it in a ``` code block).",
                     "Format your whole answer as a JSON object.")


def _c_sections(rng):
    splitter = rng.choice(["Section", "SECTION", "Part", "PART", "Chapter"])
    n = rng.randint(2, 4)
    return ({"section_spliter": splitter, "num_sections": n},
            _pick(rng, f"Split the text into {n} sections and start each one with a heading of the form "
                       f"\"{splitter} <number>\", e.g. {splitter} 1.",
                  f"Divide the reply into {n} numbered parts whose headings read \"{splitter} 1\", "
                  f"\"{splitter} 2\" and so on.",
                  f"Organise the answer in {n} parts, each beginning with \"{splitter} \" and its number."))


def _c_placeholders(rng):
    n = rng.randint(1, 4)
    return ({"num_placeholders": n},
            _pick(rng, f"Leave {n} or more fill-in-the-blank placeholders written in square brackets, like [name].",
                  f"Keep at least {n} blanks for the reader to fill in, each written in square brackets like [city].",
                  f"Include at least {n} placeholders in square brackets, for example [date]."))


def _c_postscript(rng):
    marker = rng.choice(["P.S.", "P.P.S"])
    return ({"postscript_marker": marker},
            _pick(rng, f"Close with a postscript that begins with {marker}",
                  f"After the main text add a short note that opens with {marker}",
                  f"Finish with a postscript that starts with {marker}"))


def _c_no_comma(rng):
    return {}, _pick(rng, "Do not use any commas anywhere in the text.",
                     "Commas are banned: not one may appear in what you write.",
                     "Write without a single comma.", "Leave out commas entirely.")


def _c_existence(rng):
    words = rng.sample(WORDS, rng.randint(1, 3))
    listed = " and ".join(words)
    return ({"keywords": words},
            _pick(rng, f"Make sure these words appear in the text: {listed}.",
                  f"Work the words {', '.join(words)} into the text.",
                  f"Your reply must mention the words {listed}."))


def _c_forbidden(rng):
    words = rng.sample(WORDS, rng.randint(1, 3))
    listed = " and ".join(words)
    return ({"forbidden_words": words},
            _pick(rng, f"Avoid these words completely: {listed}.",
                  f"The words {', '.join(words)} must not show up anywhere in the reply.",
                  f"Never use the words {listed}."))


def _c_frequency(rng):
    word, rel, f = rng.choice(WORDS), rng.choice(RELATIONS), rng.randint(1, 4)
    if rel == "less than":
        f += 1  # "less than 1" would forbid the word: keywords:forbidden_words says that
    return ({"keyword": word, "frequency": f, "relation": rel},
            _pick(rng, f"Use the word \"{word}\" {rel} {f} times.",
                  f"Say the word {word} {rel} {f} times.",
                  f"Let the word {word} occur {rel} {f} times."))


def _c_letter_frequency(rng):
    letter, rel, f = rng.choice("abcdefghilmnoprstuwy"), rng.choice(RELATIONS), rng.randint(2, 12)
    return ({"letter": letter, "let_frequency": f, "let_relation": rel},
            _pick(rng, f"The letter \"{letter}\" must occur {rel} {f} times in the text.",
                  f"Count your letters: \"{letter}\" has to be used {rel} {f} times.",
                  f"Use the letter {letter} {rel} {f} times."))


def _c_end(rng):
    phrase = rng.choice(END_PHRASES)
    return ({"end_phrase": phrase},
            _pick(rng, f"The very last words of your reply must be exactly: {phrase}",
                  f"Close with exactly \"{phrase}\" and write nothing after it.",
                  f"End your answer with the exact phrase \"{phrase}\""))


def _c_quotation(rng):
    return {}, _pick(rng, "Put the whole reply inside one pair of double quotes.",
                     "Enclose everything you write between two double-quote characters.",
                     "Your whole answer must start and end with a double quote (\").")


def _c_two_responses(rng):
    return {}, _pick(rng, "Write two different versions of the reply and separate them with a line of six "
                          "asterisks (******), using that separator nowhere else.",
                     "Offer two distinct answers, and place a line of ****** (six asterisks) between them and "
                     "nowhere else.")


REPEAT_SENTENCES = ["Begin by copying my request above exactly, character for character (leave out this sentence), "
                    "and then answer it.",
                    "Before you answer, copy the request above exactly as it is written (not including this "
                    "sentence), and only then write your answer."]


def _c_repeat(rng):
    # the text to repeat is filled in by ifeval_row: everything before this sentence
    return {"prompt_to_repeat": None}, rng.choice(REPEAT_SENTENCES)


IFEVAL_CONSTRAINTS: dict[str, Callable[[random.Random], tuple[dict, str]]] = {
    "change_case:english_lowercase": _c_lowercase,
    "change_case:english_capital": _c_capital,
    "change_case:capital_word_frequency": _c_capital_freq,
    "language:response_language": _c_language,
    "length_constraints:number_words": _c_words,
    "length_constraints:number_sentences": _c_sentences,
    "length_constraints:number_paragraphs": _c_paragraphs,
    "length_constraints:nth_paragraph_first_word": _c_nth_first_word,
    "detectable_format:number_bullet_lists": _c_bullets,
    "detectable_format:constrained_response": _c_constrained,
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
    "combination:repeat_prompt": _c_repeat,
}

# A fixed-phrase answer: no other constraint goes with it.
STANDALONE = {"detectable_format:constrained_response"}
# Groups of constraints that cannot (or can hardly) hold together; a prompt takes at most one from each group.
_CONFLICT_GROUPS = [
    {"change_case:english_lowercase", "change_case:english_capital", "change_case:capital_word_frequency"},
    {"length_constraints:number_paragraphs", "length_constraints:nth_paragraph_first_word",
     "detectable_format:multiple_sections", "combination:two_responses", "detectable_format:json_format"},
    {"startend:end_checker", "startend:quotation", "detectable_format:json_format", "combination:two_responses",
     "combination:repeat_prompt"},
    {"change_case:english_lowercase", "change_case:english_capital",
     "detectable_format:multiple_sections"},  # section markers ("Section 1") are matched case-sensitively
    {"length_constraints:number_words", "length_constraints:number_sentences"},
    {"keywords:existence", "keywords:frequency", "keywords:letter_frequency", "keywords:forbidden_words"},
    {"detectable_format:json_format", "punctuation:no_comma", "detectable_format:number_bullet_lists",
     "detectable_format:title", "detectable_format:number_highlighted_sections"},
    # another language: no English words, cases or phrases to keep
    {"language:response_language", "change_case:english_lowercase", "change_case:english_capital",
     "change_case:capital_word_frequency", "keywords:existence", "keywords:frequency", "keywords:forbidden_words",
     "keywords:letter_frequency", "startend:end_checker", "length_constraints:nth_paragraph_first_word",
     "combination:repeat_prompt"},
    # the repeated request has capitals and commas of its own
    {"combination:repeat_prompt", "change_case:english_lowercase", "change_case:english_capital",
     "punctuation:no_comma", "keywords:forbidden_words", "keywords:letter_frequency"},
]
NUM_CONSTRAINTS = [1, 1, 1, 2, 2, 3]  # how many constraints a prompt takes, drawn uniformly from this list


def _conflicts(a: str, b: str) -> bool:
    if a in STANDALONE or b in STANDALONE:
        return True
    return any(a in g and b in g for g in _CONFLICT_GROUPS)


def _request(rng: random.Random, ids: list[str]) -> str:
    topic = rng.choice(TOPICS)
    if "detectable_format:constrained_response" in ids:
        return rng.choice(YES_NO_QUESTIONS).format(t=topic)
    forms = WRITING_FORMS + QUESTION_FORMS if rng.random() < 0.3 else WRITING_FORMS
    return rng.choice(forms).format(t=topic)


def ifeval_row(rng: random.Random, row_id: str) -> dict:
    k = rng.choice(NUM_CONSTRAINTS)
    first = rng.choice(sorted(IFEVAL_CONSTRAINTS))  # every family equally likely to appear
    ids = [first]
    if first not in STANDALONE:
        for cid in rng.sample(sorted(IFEVAL_CONSTRAINTS), len(IFEVAL_CONSTRAINTS)):
            if len(ids) == k:
                break
            if cid not in ids and not any(_conflicts(cid, other) for other in ids):
                ids.append(cid)
    ids.sort(key=lambda c: c == "combination:repeat_prompt")  # the repeat instruction comes last
    task = _request(rng, ids)
    kwargs, parts = [], [task]
    for cid in ids:
        kw, sentence = IFEVAL_CONSTRAINTS[cid](rng)
        if cid == "combination:repeat_prompt":
            kw = {"prompt_to_repeat": " ".join(parts)}
        kwargs.append(kw)
        parts.append(sentence)
    prompt = " ".join(parts)
    return {
        "id": row_id,
        "messages": [{"role": "user", "content": prompt}],
        "ground_truth": json.dumps({"instruction_id_list": ids, "kwargs": kwargs}),
        "dataset": "ifeval",
        "meta": {"task": task},
    }
