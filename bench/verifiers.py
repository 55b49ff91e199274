"""Benchmark: our GSM8K checker vs math-verify alone on the same GSM8K-style responses.

    python bench/verifiers.py [--n 2000] [--seed 0] [--data ../shared/data/gsm8k/test.jsonl] [--pool]

Responses are built from the GSM8K test set's reference solutions (calculator annotations removed) in six answer
formats: `#### N`, `\\boxed{N}`, "The answer is $N.", "Final Answer: N <unit>", the last number in a sentence, and
"The answer is $1,234.00" with thousands separators and cents. Half carry the right answer, half a wrong one, so
every response has a known-correct label. Both checkers run in-process, single-threaded: ours is `verify_gsm8k`;
math-verify is `verify(parse(gold), parse(response))` with its own timeouts off (`parsing_timeout=None`,
`timeout_seconds=None`). Printed: checks/s for each, their ratio (goal >= 5x), and agreement with the labels
(overall and per format). `--pool` also times our checker through `score_batch` in the bounded worker pool.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import re
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FORMATS = ("####", "boxed", "answer is", "final answer", "last number", "currency+commas")


def _final_number(answer: str) -> int:
    return int(answer.rpartition("####")[2].strip().replace(",", ""))


def make_responses(data: Path, n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    refs = [json.loads(line) for line in data.open()]
    rows = []
    for i in range(n):
        ref = refs[i % len(refs)]
        gold = _final_number(ref["answer"])
        correct = i % 2 == 0
        shown = gold if correct else gold + rng.choice([1, -1, 10, 2])
        body = re.sub(r"<<[^>]*>>", "", ref["answer"].rpartition("####")[0]).strip()
        fmt = FORMATS[(i // 2) % len(FORMATS)]
        if fmt == "####":
            text = f"{body}\n#### {shown}"
        elif fmt == "boxed":
            text = f"{body}\nSo the total is $\\boxed{{{shown}}}$."
        elif fmt == "answer is":
            text = f"{body}\nThe answer is ${shown}."
        elif fmt == "final answer":
            text = f"{body}\nFinal Answer: {shown} dollars"
        elif fmt == "last number":
            text = f"{body}\nSo in the end she has {shown} left."
        else:
            text = f"{body}\nThe answer is ${shown:,}.00"
        rows.append({"response": text, "ground_truth": str(gold), "label": correct, "format": fmt})
    return rows


def run_ours(rows):
    from rewards.gsm8k import verify_gsm8k

    return [verify_gsm8k(r["response"], r["ground_truth"]).value == 1.0 for r in rows]


def run_math_verify(rows):
    from math_verify import parse, verify

    out = []
    for r in rows:
        gold = parse(r["ground_truth"], parsing_timeout=None)
        pred = parse(r["response"], parsing_timeout=None)
        out.append(bool(verify(gold, pred, timeout_seconds=None)))
    return out


def run_pool(rows):
    from rewards.bounded import BoundedPool
    from rewards.scoring import score_batch, warm_up_worker

    with BoundedPool(2, 5.0, initializer=warm_up_worker) as pool:
        score_batch(["#### 1"], ["1"], ["gsm8k"], pool=pool)  # workers started and warm before timing
        t0 = time.perf_counter()
        batch = score_batch([r["response"] for r in rows], [r["ground_truth"] for r in rows],
                            ["gsm8k"] * len(rows), pool=pool)
        return [v == 1.0 for v in batch.values], time.perf_counter() - t0


def timed(fn, rows):
    t0 = time.perf_counter()
    verdicts = fn(rows)
    return verdicts, time.perf_counter() - t0


def report(name, rows, verdicts, seconds):
    agree = sum(v == r["label"] for v, r in zip(verdicts, rows))
    by_fmt = defaultdict(lambda: [0, 0])
    for v, r in zip(verdicts, rows):
        by_fmt[r["format"]][0] += v == r["label"]
        by_fmt[r["format"]][1] += 1
    rate = len(rows) / seconds
    detail = ", ".join(f"{f} {a / t:.1%}" for f, (a, t) in by_fmt.items())
    print(f"{name:28s} {rate:10.0f} checks/s   agreement {agree}/{len(rows)} ({agree / len(rows):.1%})   [{detail}]")
    return rate


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "gsm8k" / "test.jsonl")
    p.add_argument("--pool", action="store_true", help="also time score_batch through the bounded worker pool")
    args = p.parse_args()
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    rows = make_responses(args.data, args.n, args.seed)
    print(f"{len(rows)} GSM8K-style responses, {len(FORMATS)} formats, half correct (seed {args.seed})")
    run_math_verify(rows[:20])  # warm imports for both before timing
    run_ours(rows[:20])
    ours, t_ours = timed(run_ours, rows)
    mv, t_mv = timed(run_math_verify, rows)
    r_ours = report("ours (rewards.gsm8k)", rows, ours, t_ours)
    r_mv = report("math-verify alone", rows, mv, t_mv)
    print(f"ratio ours / math-verify: {r_ours / r_mv:.1f}x (goal >= 5x)")
    if args.pool:
        verdicts, t_pool = run_pool(rows)
        report("ours via score_batch pool", rows, verdicts, t_pool)


if __name__ == "__main__":
    main()
