"""GSM8K by lm-evaluation-harness's protocol (its `gsm8k` task, version 3.0, as in lm-eval 0.4.13), so the
numbers compare with lm-eval's `exact_match,strict-match` and `exact_match,flexible-extract`.

- Prompt: plain text, no chat template: 5 training examples drawn for each test question in turn by one
  `random.Random(1234)` (lm-eval's default few-shot sampler and seed), each "Question: {question}\\nAnswer:
  {full worked answer, calculator annotations and '#### N' included}\\n\\n", then "Question: {question}\\nAnswer:".
- Generation: greedy, up to 256 new tokens, cut at "Question:", "</s>", "<|im_end|>" (and EOS); tokenised as
  lm-eval does (the tokenizer's default special tokens, e.g. a BOS for Llama-style tokenizers).
- strict-match: the first `#### (-?[0-9.,]+)` in the response; flexible-extract: the last
  `(-?[$0-9.,]{2,})|(-?[0-9]+)` match; "[invalid]" when there is none.
- exact_match: both the extracted answer and the reference answer with ",", "$", everything up to "#### " and a
  final "." removed, lower-cased, then compared as strings.
Our own GSM8K protocol (`rlvr.eval.tasks.gsm8k`: chat template, our verifier) answers a different question (does
the chat model solve it) and is not comparable with these numbers.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

NUM_FEWSHOT = 5
FEWSHOT_SEED = 1234
MAX_GEN_TOKS = 256
UNTIL = ("Question:", "</s>", "<|im_end|>")
FALLBACK = "[invalid]"
_STRICT = re.compile(r"#### (\-?[0-9\.\,]+)")
_FLEXIBLE = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")
_IGNORE = (re.compile(","), re.compile(r"\$"), re.compile(r"(?s).*#### "), re.compile(r"\.$"))


def question(doc: dict) -> str:
    return f"Question: {doc['question']}\nAnswer:"


def fewshot_contexts(docs: Sequence[dict], train_docs: Sequence[dict], num_fewshot: int = NUM_FEWSHOT,
                     seed: int = FEWSHOT_SEED) -> list[str]:
    """One prompt per doc, in order: the few-shot draws depend on the position, as in lm-eval (so `--limit N`
    gives the first N prompts of a full run)."""
    rng = random.Random(seed)
    out = []
    for doc in docs:
        shots = rng.sample(list(train_docs), num_fewshot) if num_fewshot else []
        out.append("".join(f"{question(s)} {s['raw_answer']}\n\n" for s in shots) + question(doc))
    return out


def strict_match(response: str) -> str:
    found = _STRICT.findall(response)
    return found[0].strip() if found else FALLBACK


def flexible_extract(response: str) -> str:
    found = _FLEXIBLE.findall(response)
    if not found:
        return FALLBACK
    groups = [g for g in found[-1] if g]
    return groups[0].strip() if groups else FALLBACK


def _normalise(text: str) -> str:
    for pattern in _IGNORE:
        text = pattern.sub("", text)
    return text.lower()


def exact_match(extracted: str, reference: str) -> float:
    return float(_normalise(extracted) == _normalise(reference))


def evaluate_gsm8k_lm_eval(docs: Sequence[dict], train_docs: Sequence[dict], generator, *,
                           num_fewshot: int = NUM_FEWSHOT, max_new_tokens: int = MAX_GEN_TOKS,
                           stop: Sequence[str] = UNTIL) -> tuple[dict[str, float], list[dict]]:
    if num_fewshot > len(train_docs):
        raise ValueError(f"num_fewshot={num_fewshot} but only {len(train_docs)} training examples were given")
    contexts = fewshot_contexts(docs, train_docs, num_fewshot)
    eos = getattr(getattr(generator, "tok", None), "eos_token", None)
    until = [*stop, *([eos] if eos and eos not in stop else [])]  # lm-eval adds the EOS text if missing
    responses = generator.generate_text(contexts, max_new_tokens, until)
    strict = flexible = 0.0
    records = []
    for doc, context, response in zip(docs, contexts, responses):
        s, f = strict_match(response), flexible_extract(response)
        s_ok, f_ok = exact_match(s, doc["raw_answer"]), exact_match(f, doc["raw_answer"])
        strict, flexible = strict + s_ok, flexible + f_ok
        records.append({"id": doc["id"], "answer": doc["answer"], "context": context, "response": response,
                        "strict-match": s, "flexible-extract": f, "strict_ok": s_ok, "flexible_ok": f_ok})
    n = len(docs)
    metrics = {"exact_match,strict-match": strict / n if n else 0.0,
               "exact_match,flexible-extract": flexible / n if n else 0.0, "n": n, "num_fewshot": num_fewshot}
    return metrics, records
