"""TRL reward functions: `(prompts, completions, **dataset_columns) -> list[float]`, as `GRPOTrainer(reward_funcs=...)`.

    from rewards.adapters.trl import make_reward_func
    trainer = GRPOTrainer(..., reward_funcs=[make_reward_func("gsm8k")])      # every row scored by gsm8k
    trainer = GRPOTrainer(..., reward_funcs=[make_reward_func()])             # the row's `dataset` column decides

TRL passes every extra dataset column as a keyword list aligned with `completions`; the ground truth is read from
`ground_truth_column` (default "ground_truth") and, when no fixed verifier is given, the verifier name from
`dataset_column` (default "dataset"). Completions (and prompts) may be strings or conversational lists of
`{"role", "content"}` messages; the last message's content is scored. Failed calls (error/timeout) score 0.0 and
are logged as a warning with their count; scoring is time-bounded in the shared worker pool.

Scripts without an `if __name__ == "__main__":` guard (TRL's quickstart style) work: the pool's workers are fresh
interpreters that never re-run the script (unlike multiprocessing's spawn, which re-imports `__main__`). The
trade-off: a verifier must live in an importable module, not in the training script itself (such a verifier is
refused when the reward function is made). Each verifier's heavy dependencies load on its first use in a worker
(math-verify only when a MATH row is scored), outside the call's time limit. `make_reward_func` checks the
verifier name and the scoring environment variables when it is called, not at the first training step.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from rewards.scoring import check_environment, resolve_verifiers, score_batch

log = logging.getLogger(__name__)


def message_text(item: Any) -> str:
    """A string, or the text of the last message of a conversational list (content str or list of text parts)."""
    if isinstance(item, str):
        return item
    if isinstance(item, list) and item and isinstance(item[-1], dict):
        content = item[-1].get("content", "")
        if isinstance(content, list):
            return "".join(p.get("text", "") for p in content if isinstance(p, dict))
        return str(content)
    raise TypeError(f"expected a string or a list of message dicts, got {type(item).__name__}")


def make_reward_func(dataset: str | None = None, *, dataset_column: str = "dataset",
                     ground_truth_column: str = "ground_truth", weights: dict[str, float] | None = None,
                     timeout_s: float | None = None) -> Callable[..., list[float]]:
    """A TRL reward function scoring with `dataset`'s verifier, or each row's `dataset_column` when None."""
    check_environment()
    if dataset is not None:
        resolve_verifiers([dataset], load=True)  # unknown or broken verifier: fail now, not mid-training

    def reward(prompts: list[Any], completions: list[Any], **kwargs) -> list[float]:
        if ground_truth_column not in kwargs:
            raise KeyError(f"reward function needs the dataset column {ground_truth_column!r}; "
                           f"got columns {sorted(k for k in kwargs if not k.startswith('trainer'))}")
        truths = list(kwargs[ground_truth_column])
        if dataset is not None:
            names: list[Any] = [dataset] * len(completions)
        elif dataset_column in kwargs:
            names = list(kwargs[dataset_column])
        else:
            raise KeyError(f"no fixed verifier and no {dataset_column!r} column to choose one per row")
        prompt_texts = [message_text(p) for p in prompts] if prompts is not None else None
        batch = score_batch([message_text(c) for c in completions], truths, names, prompts=prompt_texts,
                            weights=weights, timeout_s=timeout_s)
        if batch.failures:
            log.warning("TRL reward: %d errors, %d timeouts in %d samples; first: %s", batch.errors,
                        batch.timeouts, len(completions), batch.failures[0][2])
        return batch.values

    reward.__name__ = f"rlvr_{dataset or 'verifiable'}_reward"  # TRL names its reward metrics after this
    return reward
