"""`langdetect.detect(text)` with identical results, several times faster.

langdetect (1.0.9) spends its time in two pure-Python loops: extracting character n-grams, and seven random trials
that multiply 55 per-language probabilities by each sampled n-gram's profile. We keep everything that decides the
answer — langdetect's own `Detector` (text cleaning, seed, trial count, alpha), its profiles, the same random
number calls in the same order, the same floating-point operations on each element in the same order, Python's own
`sum` for the normaliser, and its own final sorting — and only change how the loops run:
- text cleaning uses regexes for its character loops; n-gram extraction normalises through a translation table
  (memoised `NGram.normalize`) and runs `NGram.add_char`'s state machine once per distinct word, since it
  restarts at every space;
- each trial adds the trial's weight to a sampled n-gram's profile row once (numpy, elementwise: the same IEEE
  operations as `weight + lang_prob_map[i]`), then multiplies the probability vector by it in place.
Results are cached per n-gram sequence (texts that differ only in punctuation or `*` markers share them).
`tests/rewards/test_ifeval_text.py` checks equality with `langdetect` itself, probabilities included.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict

_lock = threading.Lock()
_state: dict = {}
_RESULT_CACHE_SIZE = 4096


def _init():
    if not _state:
        with _lock:
            if not _state:
                # lazy: langdetect loads its language profiles here, once, behind the lock (the first detection
                # pays for it, or a worker's warm_up), not every importer of rewards.ifeval
                import numpy as np
                from langdetect import DetectorFactory, detector_factory
                from langdetect.lang_detect_exception import LangDetectException
                from langdetect.utils.ngram import NGram

                DetectorFactory.seed = 0  # deterministic, as the reference evaluations set it
                detector_factory.init_factory()
                _state.update(
                    np=np,
                    factory=detector_factory._factory,
                    normalize=NGram.normalize,
                    normalize_vi=NGram.normalize_vi,
                    norm_table={},
                    words={},
                    rows={},
                    results=OrderedDict(),
                    error=LangDetectException,
                )
    return _state


_SPACES_RE = re.compile(" +")
_LATIN_RE = re.compile("[A-z]")  # langdetect's 'A' <= ch <= 'z'
_NON_LATIN_RE = re.compile("[\u0300-\U0010ffff]")
_WORD_CACHE_MAX = 200_000
_ROWS_CACHE_MAX = 50_000  # x 55 float64 = 22 MB at most


def _clean(detector, text: str) -> str:
    """`Detector.append(text)` then `Detector.cleaning_text()`, returning the detector's text.

    langdetect's cleaning compares `unicode_block(ch)` (an int) with a block *name*, so every character from
    U+0300 up counts as non-Latin; we count the same way."""
    text = detector.URL_RE.sub(" ", text)
    text = detector.MAIL_RE.sub(" ", text)
    text = _state["normalize_vi"](text)
    text = _SPACES_RE.sub(" ", text[: detector.max_text_length])  # append() drops a space after a space
    if len(_LATIN_RE.findall(text)) * 2 < len(_NON_LATIN_RE.findall(text)):
        text = _LATIN_RE.sub("", text)
    return text


def _normalized(text: str) -> str:
    """`NGram.normalize` applied to every character (memoised per character in a translation table)."""
    table = _state["norm_table"]
    missing = {ch for ch in set(text) if ord(ch) not in table}
    if missing:
        normalize = _state["normalize"]
        with _lock:
            for ch in missing:
                table[ord(ch)] = normalize(ch)
    return text.translate(table)


def _word_ngrams(word: str, trailing_space: bool, prob_map: dict) -> tuple[str, ...]:
    """The n-grams `Detector._extract_ngrams` emits for one space-delimited word (its state machine restarts at
    every space), including those ending in the following space."""
    result = []
    grams = " "
    capital = False
    for c in word + " " if trailing_space else word:
        last = grams[-1]
        if last == " ":
            grams = " "
            capital = False
        elif len(grams) >= 3:
            grams = grams[1:]
        grams += c
        if c.isupper():
            if last.isupper():
                capital = True
        else:
            capital = False
        if capital:
            continue
        if c != " " and c in prob_map:
            result.append(c)
        n = len(grams)
        if n >= 2:
            w = grams[-2:]
            if w in prob_map:
                result.append(w)
            if n >= 3:
                w = grams[-3:]
                if w in prob_map:
                    result.append(w)
    return tuple(result)


def _extract_ngrams(text: str, prob_map: dict) -> list[str]:
    """`Detector._extract_ngrams` for a cleaned text, word by word with a per-word cache."""
    cache = _state["words"]
    if len(cache) > _WORD_CACHE_MAX:
        cache.clear()
    parts = _normalized(text).split(" ")
    last = len(parts) - 1
    result: list[str] = []
    for k, word in enumerate(parts):
        if not word:
            continue
        key = (word, k < last)
        grams = cache.get(key)
        if grams is None:
            grams = cache[key] = _word_ngrams(word, k < last, prob_map)
        result.extend(grams)
    return result


def _trials(detector, ngrams: list[str], st: dict) -> list[float]:
    """`Detector._detect_block` after n-gram extraction: returns `langprob`."""
    np = st["np"]
    rows = st["rows"]  # n-gram -> its profile row as an array, for the n-grams seen lately
    if len(rows) > _ROWS_CACHE_MAX:
        rows.clear()
    prob_map = detector.word_lang_prob_map
    n_lang = len(detector.langlist)
    langprob = np.zeros(n_lang)
    rng = detector.random
    rng.seed(detector.seed)
    randbelow = rng._randbelow  # what random.choice(ngrams) calls: the same draws
    count = len(ngrams)
    limit, threshold = detector.ITERATION_LIMIT, detector.CONV_THRESHOLD
    for _ in range(detector.n_trial):
        if detector.prior_map is not None:
            prob = np.array(detector.prior_map, dtype=np.float64)
        else:
            prob = np.full(n_lang, 1.0 / n_lang)
        alpha = detector.alpha + rng.gauss(0.0, 1.0) * detector.ALPHA_WIDTH
        weight = alpha / detector.BASE_FREQ
        weighted: dict = {}  # n-gram -> weight + its row (elementwise, as langdetect computes it)
        i = 0
        while True:
            word = ngrams[randbelow(count)]
            factor = weighted.get(word)
            if factor is None:
                row = rows.get(word)
                if row is None:
                    row = rows[word] = np.array(prob_map[word], dtype=np.float64)
                factor = weighted[word] = weight + row
            prob *= factor
            if i % 5 == 0:
                total = sum(prob.tolist())  # Python's own sum, as langdetect normalises
                if total == 0.0:
                    raise ZeroDivisionError("float division by zero")  # what langdetect would raise
                prob /= total
                if float(prob.max()) > threshold or i >= limit:
                    break
            i += 1
        langprob += prob / detector.n_trial
    return langprob.tolist()


def clear_caches() -> None:
    """Drop cached words, profile rows and results (the character normalisation table is kept: it is static)."""
    for name in ("words", "rows", "results"):
        if name in _state:
            _state[name].clear()


def detect(text: str) -> str | None:
    """The language code `langdetect.detect(text)` returns (seed 0), or None where it raises (no features)."""
    st = _init()
    detector = st["factory"].create()
    ngrams = _extract_ngrams(_clean(detector, text), detector.word_lang_prob_map)
    if not ngrams:
        return None
    key = tuple(ngrams)
    results: OrderedDict = st["results"]
    with _lock:
        if key in results:
            results.move_to_end(key)
            return results[key]
    detector.langprob = _trials(detector, ngrams, st)
    lang = detector.detect()
    with _lock:
        results[key] = lang
        if len(results) > _RESULT_CACHE_SIZE:
            results.popitem(last=False)
    return lang


def probabilities(text: str) -> list[tuple[str, float]]:
    """`langdetect.detect_langs(text)` as (lang, prob) pairs, via the fast path (for tests)."""
    st = _init()
    detector = st["factory"].create()
    ngrams = _extract_ngrams(_clean(detector, text), detector.word_lang_prob_map)
    if not ngrams:
        raise st["error"](0, "No features in text.")
    detector.langprob = _trials(detector, ngrams, st)
    return [(lang.lang, lang.prob) for lang in detector.get_probabilities()]
