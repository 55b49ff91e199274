"""verl custom reward function: `custom_reward_function.path=<this file> custom_reward_function.name=compute_score`
(or `compute_score_batch` with verl's BatchRewardManager).

`compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs)` returns
`{"score": float, "acc": 0.0 | 1.0, "reward_failed": 0.0 | 1.0}` for every sample (verl uses "score" as the
reward and logs the other keys; every sample has the same keys, as verl's reward managers need).

Two semantics, chosen per call (`semantics=` keyword, e.g. verl's `custom_reward_function.reward_kwargs`, or
`extra_info["semantics"]`), else by $RLVR_VERL_SEMANTICS, else "rlvr":
- "rlvr" (default): our verifiers. GSM8K: any answer format (`####`, `\\boxed{}`, "the answer is", last number),
  compared as exact rationals; MATH: math-verify with our numeric cross-check; rewards in [0, 1].
- "verl": verl's default scorers' verdicts (`verl.utils.reward_score.default_compute_score`), reimplemented in
  `rewards.verl_compat`. Where they differ from ours:
  - `openai/gsm8k`: only `#### N` counts, only in the last 300 characters, compared as strings: `#### 72.0`,
    `The answer is 72`, `\\boxed{72}`, `#### 1,234` against "1,234", an int ground truth, and `#### 72` followed
    by 300+ characters score 0 (ours: 1).
  - `math_dapo`, `math`, `math_dapo_reasoning`, `aime*`: the last "Answer: X" line in the last 300 characters,
    Minerva string normalisation (without one: the last `\\boxed{}` in the last 100 characters, compared as a raw
    string), and a wrong or missing answer scores **-1** (ours: 0). Equal values written differently (`0.5` vs
    `\\frac{1}{2}`, also boxed) and a box followed by 100+ characters score -1 (ours: 1); the other way, a
    plain-text "Answer: x+1" or shorthand "Answer: \\frac12" scores +1 where math-verify reads no answer
    (ours: 0) — for DAPO-style data ("Answer: $Answer") prefer "verl".
  - `lighteval/MATH`, `DigitalLearningGmbH/MATH-lighteval`, `HuggingFaceH4/MATH-500`: the last `\\boxed{}`
    compared after the Hendrycks string normalisation: `\\frac{1}{2}` = `0.5` = `1/2` there too, but `x*2` vs
    `2x` and `\\sqrt{2}/2` vs `\\frac{\\sqrt2}{2}` score 0 (ours: 1); an answer only in `\\fbox{}` scores 0.
  - `numina_*`: verl uses its prime_math grader, which is not reproduced: asking for "verl" semantics on these
    raises UnknownVerifierError; "rlvr" scores them with our MATH verifier.
  Every case above is a test (`tests/rewards/test_reward_adapters.py`); `rewards.verl_compat` agrees with verl
  0.9.1's own scorer files on all 9,200 generated cases of `tests/rewards/test_verl_compat.py` (run where a verl
  package is installed: `pip install --no-deps verl`).
  Data sources verl does not know (`gsm8k`, `ifeval`, ...) use our verifiers under both semantics.

Which verifier scores a sample, in order: `kwargs["verifier"]`, `extra_info["verifier"]`, verl's data source
names (`VERL_SOURCES`, plus any name starting "aime"), a registered verifier name, its last path component
(`someone/gsm8k` -> `gsm8k`). An unknown name raises UnknownVerifierError listing what is known.

Set-up checks (errors at start-up instead of mid-training): the file checks the scoring environment when verl loads
it, and $RLVR_VERL_DATA_SOURCES (comma-separated) if set; `make_compute_score(data_sources, semantics)` builds a
`compute_score` that validates its data sources when it is made:

    # my_reward.py, given to verl as custom_reward_function.path
    from rewards.adapters.verl import make_compute_score
    compute_score = make_compute_score(["openai/gsm8k", "math_dapo"], semantics="verl")

Scoring is time-bounded in the shared worker pool.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

from rewards.registry import UnknownVerifierError, get_verifier, known_verifiers
from rewards.scoring import check_environment, resolve_verifiers, score_batch

SEMANTICS = ("rlvr", "verl")
SEMANTICS_ENV = "RLVR_VERL_SEMANTICS"
SOURCES_ENV = "RLVR_VERL_DATA_SOURCES"
_NUMINA = ("numina_aops_forum", "numina_synthetic_math", "numina_amc_aime", "numina_synthetic_amc", "numina_cn_k12",
           "numina_olympiads")
# verl data source (exact, as verl matches it) -> (our verifier, the verl-semantics verifier or None)
VERL_SOURCES: dict[str, tuple[str, str | None]] = {
    "openai/gsm8k": ("gsm8k", "verl_gsm8k"),
    **{s: ("math", "verl_math") for s in ("lighteval/MATH", "DigitalLearningGmbH/MATH-lighteval",
                                          "HuggingFaceH4/MATH-500")},
    **{s: ("math", "verl_math_dapo") for s in ("math_dapo", "math", "math_dapo_reasoning")},
    **{s: ("math", None) for s in _NUMINA},
    "google/IFEval": ("ifeval", None),
    # verl scores these with prime_code (the fraction of the first 10 stdin/stdout cases), not reproduced
    **{s: ("code", None) for s in ("codecontests", "apps", "codeforces", "taco")},
}
_AIME = ("math", "verl_math_dapo")  # verl: any data source starting with "aime"
_LOWER = {k.lower(): k for k in VERL_SOURCES}


def _verl_entry(source: str) -> tuple[str, str | None] | None:
    if source in VERL_SOURCES:
        return VERL_SOURCES[source]
    return _AIME if source.startswith("aime") else None


def _semantics(value: Any, where: str) -> str:
    if value not in SEMANTICS:
        raise ValueError(f"{where}: semantics must be one of {SEMANTICS}, got {value!r}")
    return value


def verifier_name(data_source: str, extra_info: dict | None = None, *, semantics: str = "rlvr",
                  verifier: str | None = None, **_ignored) -> str:
    """The verifier name for one sample (see the module docstring); UnknownVerifierError if there is none."""
    if verifier:
        return verifier
    if isinstance(extra_info, dict) and extra_info.get("verifier"):
        return extra_info["verifier"]
    source = str(data_source)
    if semantics == "verl" and _verl_entry(source) is not None:  # verl's own, case-sensitive matching
        theirs = _verl_entry(source)[1]
        if theirs is None:
            ours = _verl_entry(source)[0]
            scorer = "prime_code" if ours == "code" else "prime_math"
            raise UnknownVerifierError(f"verl semantics for data source {source!r} (verl's {scorer} scorer) are "
                                       f"not reproduced; use semantics='rlvr' (our {ours!r} verifier)")
        return theirs
    entry = _verl_entry(source) or _verl_entry(_LOWER.get(source.lower(), source.lower()))
    if entry is not None:
        return entry[0]
    for candidate in (source, source.rsplit("/", 1)[-1]):
        try:
            get_verifier(candidate)
            return candidate
        except UnknownVerifierError:
            continue
    raise UnknownVerifierError(f"unknown data source {source!r}: not one of verl's ({', '.join(VERL_SOURCES)}, "
                               "aime*) and not a verifier name (known: "
                               f"{', '.join(n for n in known_verifiers() if not n.startswith('verl_'))})")


def check_data_sources(data_sources: Iterable[str], semantics: str = "rlvr") -> dict[str, str]:
    """Map each data source to its verifier now and load those verifiers: the set-up check. Returns the mapping."""
    _semantics(semantics, "check_data_sources")
    mapping = {s: verifier_name(s, semantics=semantics) for s in data_sources}
    resolve_verifiers(mapping.values(), load=True)
    return mapping


def _result(batch, i: int) -> dict[str, float]:
    failed = any(j == i for j, _, _ in batch.failures)
    value = batch.values[i]
    return {"score": value, "acc": float(value >= 1.0), "reward_failed": float(failed)}


def _call_semantics(extra_info: dict | None, kwargs: dict, default: str) -> str:
    value = kwargs.get("semantics")
    if value is None and isinstance(extra_info, dict):
        value = extra_info.get("semantics")
    return _semantics(value if value is not None else default, "compute_score")


def compute_score(data_source: str, solution_str: str, ground_truth: Any, extra_info: dict | None = None,
                  **kwargs) -> dict[str, float]:
    semantics = _call_semantics(extra_info, kwargs, DEFAULT_SEMANTICS)
    name = verifier_name(data_source, extra_info, semantics=semantics, verifier=kwargs.get("verifier"))
    prompt = extra_info.get("question") if isinstance(extra_info, dict) else None
    batch = score_batch([solution_str], [ground_truth], [name], prompts=[prompt])
    return _result(batch, 0)


def compute_score_batch(data_sources, solution_strs, ground_truths, extra_infos=None, **kwargs) -> list[dict]:
    """verl BatchRewardManager form: lists in, one result dict per sample out."""
    extra_infos = extra_infos if extra_infos is not None else [None] * len(solution_strs)
    names = []
    for ds, ei in zip(data_sources, extra_infos):
        semantics = _call_semantics(ei, kwargs, DEFAULT_SEMANTICS)
        names.append(verifier_name(ds, ei, semantics=semantics, verifier=kwargs.get("verifier")))
    batch = score_batch(list(solution_strs), list(ground_truths), names)
    return [_result(batch, i) for i in range(len(names))]


def make_compute_score(data_sources: Iterable[str] | None = None, semantics: str = "rlvr") -> Callable[..., dict]:
    """A `compute_score` whose default semantics is `semantics`; `data_sources` are checked now (set-up time)."""
    _semantics(semantics, "make_compute_score")
    check_environment()
    if data_sources is not None:
        check_data_sources(data_sources, semantics)

    def compute(data_source, solution_str, ground_truth, extra_info=None, **kwargs):
        kwargs.setdefault("semantics", semantics)
        return compute_score(data_source, solution_str, ground_truth, extra_info, **kwargs)

    compute.__name__ = f"rlvr_{semantics}_compute_score"
    return compute


# ---- set-up checks, when verl loads this file ----
check_environment()
DEFAULT_SEMANTICS = _semantics(os.environ.get(SEMANTICS_ENV) or "rlvr", f"${SEMANTICS_ENV}")
if os.environ.get(SOURCES_ENV):
    check_data_sources([s.strip() for s in os.environ[SOURCES_ENV].split(",") if s.strip()], DEFAULT_SEMANTICS)
