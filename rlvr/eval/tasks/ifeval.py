"""IFEval: greedy generation, checked by our IFEval checkers (rewards.ifeval) in Google's format; reports the four
standard accuracies: prompt- and instruction-level, strict and loose."""

from __future__ import annotations

from collections.abc import Sequence

from rewards.ifeval import accuracies, check_instructions
from rlvr.eval.generation import TextGenerator


def evaluate_ifeval(docs: Sequence[dict], generator: TextGenerator, *,
                    max_new_tokens: int = 512) -> tuple[dict[str, float], list[dict]]:
    responses = generator.generate([[{"role": "user", "content": d["prompt"]}] for d in docs], max_new_tokens)
    results, records = [], []
    for doc, response in zip(docs, responses):
        result = check_instructions(response, doc["instruction_id_list"], doc["kwargs"], prompt=doc["prompt"])
        results.append(result)
        records.append({"id": doc["id"], "prompt": doc["prompt"], "instruction_id_list": doc["instruction_id_list"],
                        "kwargs": doc["kwargs"], "response": response, "strict": list(result.strict),
                        "loose": list(result.loose)})
    metrics = {k: float(v) for k, v in accuracies(results).items()} if results else {}
    metrics["n"] = len(docs)
    return metrics, records
