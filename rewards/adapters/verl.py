"""verl custom reward function: `custom_reward_function.path=<this file> custom_reward_function.name=compute_score`
(or `compute_score_batch` with verl's BatchRewardManager).

`compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs)` returns
`{"score": float, "reward_failed": 0.0 | 1.0}` (verl uses "score" as the reward and logs the other keys).
The verifier is chosen by, in order: `kwargs["verifier"]`, `extra_info["verifier"]`, `data_source` itself if
registered, its last path component (`openai/gsm8k` -> `gsm8k`), or the known verl data sources below. An unknown
one raises UnknownVerifierError listing the known names. Scoring is time-bounded in the shared worker pool.
"""

from __future__ import annotations

from typing import Any

from rewards.registry import get_verifier
from rewards.scoring import score_batch

# verl's example data sources whose last path component is not itself a verifier name
KNOWN_SOURCES = {
    "digitallearninggmbh/math-lighteval": "math",
    "lighteval/math": "math",
    "huggingfaceh4/math-500": "math",
    "google/ifeval": "ifeval",
}


def verifier_name(data_source: str, extra_info: dict | None = None, **kwargs) -> str:
    if kwargs.get("verifier"):
        return kwargs["verifier"]
    if isinstance(extra_info, dict) and extra_info.get("verifier"):
        return extra_info["verifier"]
    source = str(data_source)
    if source.lower() in KNOWN_SOURCES:
        return KNOWN_SOURCES[source.lower()]
    for candidate in (source, source.rsplit("/", 1)[-1]):
        try:
            get_verifier(candidate)
            return candidate
        except KeyError:
            continue
    get_verifier(source)  # raises UnknownVerifierError with the list of known names
    return source


def _result(batch, i: int) -> dict[str, float]:
    failed = any(j == i for j, _, _ in batch.failures)
    return {"score": batch.values[i], "reward_failed": float(failed)}


def compute_score(data_source: str, solution_str: str, ground_truth: Any, extra_info: dict | None = None,
                  **kwargs) -> dict[str, float]:
    name = verifier_name(data_source, extra_info, **kwargs)
    prompt = extra_info.get("question") if isinstance(extra_info, dict) else None
    batch = score_batch([solution_str], [ground_truth], [name], prompts=[prompt])
    return _result(batch, 0)


def compute_score_batch(data_sources, solution_strs, ground_truths, extra_infos=None, **kwargs) -> list[dict]:
    """verl BatchRewardManager form: lists in, one result dict per sample out."""
    extra_infos = extra_infos if extra_infos is not None else [None] * len(solution_strs)
    names = [verifier_name(ds, ei, **kwargs) for ds, ei in zip(data_sources, extra_infos)]
    batch = score_batch(list(solution_strs), list(ground_truths), names)
    return [_result(batch, i) for i in range(len(names))]
