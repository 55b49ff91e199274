"""Evaluation: GSM8K and IFEval by generation + our verifiers, ARC-Easy/Challenge and HellaSwag by log-likelihood.

    from rlvr.eval import evaluate
    results = evaluate("smollm2-135m-instruct", "gsm8k,arc_easy", limit=100)  # {task: {metric: value}}

Importing this package loads no torch; models load when a task needs them.
"""

from __future__ import annotations


def evaluate(model, tasks, **kwargs) -> dict[str, dict[str, float]]:
    """See `rlvr.eval.runner.evaluate`."""
    from rlvr.eval.runner import evaluate as _evaluate  # lazy: importing the package stays torch-free

    return _evaluate(model, tasks, **kwargs)


__all__ = ["evaluate"]
