"""GSM8K: greedy generation, scored by our GSM8K verifier (rewards, dataset "gsm8k").

Zero-shot chat by default: the question, then an instruction to end with "The answer is <number>." With
`num_fewshot=k`, the first k training problems come first as user/assistant turns, each answer a worked solution
(calculator annotations removed) ending "The answer is N." The verifier also accepts "#### N", \\boxed{} and a
last number.
"""

from __future__ import annotations

from collections.abc import Sequence

from core.procedural import ANSWER_INSTRUCTION
from rewards import get_verifier
from rlvr.eval.generation import TextGenerator


def fewshot_turns(train_docs: Sequence[dict], k: int) -> list[dict]:
    turns = []
    for doc in train_docs[:k]:
        turns.append({"role": "user", "content": f"{doc['question']}\n{ANSWER_INSTRUCTION}"})
        turns.append({"role": "assistant", "content": f"{doc['solution']}\nThe answer is {doc['answer']}."})
    return turns


def conversation(doc: dict, shots: list[dict]) -> list[dict]:
    return [*shots, {"role": "user", "content": f"{doc['question']}\n{ANSWER_INSTRUCTION}"}]


def evaluate_gsm8k(docs: Sequence[dict], generator: TextGenerator, *, max_new_tokens: int = 256,
                   fewshot_docs: Sequence[dict] = (), num_fewshot: int = 0) -> tuple[dict[str, float], list[dict]]:
    if num_fewshot > len(fewshot_docs):
        raise ValueError(f"num_fewshot={num_fewshot} but only {len(fewshot_docs)} training examples were given")
    verify = get_verifier("gsm8k")
    shots = fewshot_turns(fewshot_docs, num_fewshot)
    conversations = [conversation(d, shots) for d in docs]
    responses = generator.generate(conversations, max_new_tokens)
    records, correct = [], 0.0
    for doc, conv, response in zip(docs, conversations, responses):
        score = verify(response, doc["answer"], prompt=conv[-1]["content"])
        correct += score.value
        records.append({"id": doc["id"], "answer": doc["answer"], "response": response, "score": score.value,
                        "reason": score.reason})
    n = len(docs)
    return {"exact_match": correct / n if n else 0.0, "n": n, "num_fewshot": num_fewshot}, records
