"""Multiple choice by log-likelihood, as lm-eval scores ARC and HellaSwag.

Each choice is a continuation of the context; the prediction is the choice with the highest log-likelihood
(`acc`) or the highest log-likelihood divided by the choice's length in characters (`acc_norm`, lm-eval's
length normalisation, which removes the bias towards short continuations).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

Scorer = Callable[[Sequence[tuple[str, str]]], list[float]]


def arc_request(doc: dict) -> tuple[str, list[str]]:
    """lm-eval's ARC prompt: "Question: ...\\nAnswer:" and each choice after a space."""
    return f"Question: {doc['question']}\nAnswer:", list(doc["choices"])


def hellaswag_request(doc: dict) -> tuple[str, list[str]]:
    return doc["query"], list(doc["choices"])


REQUESTS = {"arc_easy": arc_request, "arc_challenge": arc_request, "hellaswag": hellaswag_request}


def pick(logliks: Sequence[float], choices: Sequence[str]) -> tuple[int, int]:
    """(argmax of log-likelihood, argmax of log-likelihood per character). Ties go to the first choice."""
    raw = max(range(len(logliks)), key=lambda i: (logliks[i], -i))
    normed = [ll / max(len(c), 1) for ll, c in zip(logliks, choices)]
    norm = max(range(len(normed)), key=lambda i: (normed[i], -i))
    return raw, norm


def evaluate_multiple_choice(task: str, docs: Sequence[dict], scorer: Scorer) -> tuple[dict[str, float], list[dict]]:
    """Score every choice of every doc in one batched call; returns (metrics, per-doc records)."""
    make = REQUESTS[task]
    requests, spans = [], []
    for doc in docs:
        context, choices = make(doc)
        spans.append((len(requests), len(choices)))
        requests.extend((context, " " + c) for c in choices)
    logliks = scorer(requests)
    if len(logliks) != len(requests):
        raise RuntimeError(f"scorer returned {len(logliks)} scores for {len(requests)} requests")
    records, acc, acc_norm = [], 0, 0
    for doc, (start, k) in zip(docs, spans):
        ll = logliks[start:start + k]
        raw, norm = pick(ll, doc["choices"])
        acc += raw == doc["gold"]
        acc_norm += norm == doc["gold"]
        records.append({"id": doc["id"], "gold": doc["gold"], "pred": raw, "pred_norm": norm, "logliks": ll})
    n = len(docs)
    metrics = {"acc": acc / n if n else 0.0, "acc_norm": acc_norm / n if n else 0.0, "n": n}
    return metrics, records
