"""Procedural verifiable tasks: data for RLVR that needs no download, in the Tulu 3 RLVR row schema.

    {"id": ..., "messages": [{"role": "user", "content": ...}], "ground_truth": ..., "dataset": ..., "meta": {...}}

Tasks:
- "gsm8k": arithmetic word problems with exact integer answers (shopping, rates, sharing, discounts, travel, ages,
  profit over several steps), at three difficulty levels. `ground_truth` is the answer as a string; the prompt asks
  the model to end with "The answer is <number>." (the GSM8K verifier also extracts "#### <number>").
  `meta` holds the template name, difficulty and operands, so the answer can be recomputed.
- "ifeval" (built in core.procedural_ifeval): a writing task with 1-3 randomised constraints stated in plain
  English. `ground_truth` is a JSON string in Google's IFEval format, `{"instruction_id_list": [...], "kwargs":
  [...]}`, with the instruction ids and kwargs names of google-research `instruction_following_eval` (the "ifeval"
  verifier checks it).
- "mixed": each row is gsm8k or ifeval with equal probability.
- "gsm8k_sft": SFT rows (`messages` = user problem + assistant worked solution ending "The answer is N."), built
  from the gsm8k templates' operands; `ground_truth` is N. The default offline SFT data (sft_dpo reads `messages`).
- "keyword": 'Say something about T. Use the word "W".' (W in answer/the/is; IFEval keywords:existence): the
  tiny random test model's learning task (configs/rlvr/tiny_learn.yaml).
- "gsm8k_pref": preference rows in the Tulu 3 style, `chosen`/`rejected` = two full conversations (user problem +
  assistant reply): chosen is the correct worked solution, rejected the same solution with one arithmetic slip
  carried through to a wrong final answer. `ground_truth` is the correct answer. The default offline DPO/RM data.

Reproducible: row i of (task, seed) comes from its own `random.Random(f"{task}/{seed}/{i}")` (string seeds are
hashed deterministically by Python, independent of PYTHONHASHSEED), so the same seed gives identical rows and
`generate(t, n, s)[:m] == generate(t, m, s)`. No global random state is touched.

Config form (for data sources): `procedural:TASK?n=N&seed=S`, for example `procedural:gsm8k?n=256&seed=0`;
`n` defaults to 1000 and `seed` to 0. See `parse_procedural_spec`.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from urllib.parse import parse_qsl

from core.procedural_ifeval import ifeval_row

TASKS = ("gsm8k", "ifeval", "mixed", "gsm8k_sft", "gsm8k_pref", "arithmetic", "keyword")
SPEC_PREFIX = "procedural:"
DEFAULT_N = 1000
ANSWER_INSTRUCTION = 'Solve the problem step by step, then end your reply with "The answer is <number>."'

NAMES = ["Maria", "James", "Aisha", "Tom", "Lena", "Carlos", "Mei", "Omar", "Sofia", "Ravi", "Hana", "Peter",
         "Zara", "Diego", "Nina", "Kofi"]
ITEMS = [("notebook", "notebooks"), ("pen", "pens"), ("apple", "apples"), ("book", "books"), ("mug", "mugs"),
         ("ticket", "tickets"), ("plant", "plants"), ("shirt", "shirts"), ("candle", "candles")]
WORKS = [("a machine", "bottles"), ("a baker", "loaves of bread"), ("a printer", "pages"), ("a factory line", "toys"),
         ("a bee colony", "grams of honey"), ("a tailor", "buttons")]


class ProceduralSpecError(ValueError):
    """A `procedural:` data source string is malformed; the message names the string."""


# ---------------------------------------------------------------------------------------------------------------
# GSM8K-style word problems. Each template returns (question, answer, operands).
# Difficulty d in {1, 2, 3} widens the number ranges (and the harder templates add steps).

def _shopping(rng: random.Random, d: int) -> tuple[str, int, dict]:
    name = rng.choice(NAMES)
    (i1, p1), (i2, p2) = rng.sample(ITEMS, 2)
    a, b = rng.randint(2, 4 * d + 2), rng.randint(1, 3 * d + 2)
    p, q = rng.randint(2, 5 * d * d + 3), rng.randint(1, 4 * d * d + 2)
    cost = a * p + b * q
    bill = next(x for x in (10, 20, 50, 100, 200, 500, 1000, 5000) if x > cost)
    text = (f"{name} buys {a} {p1} that cost ${p} each and {b} {p2} that cost ${q} each. "
            f"{name} pays with a ${bill} bill. How much change, in dollars, does {name} get back?")
    return text, bill - cost, {"a": a, "p": p, "b": b, "q": q, "bill": bill}


def _rates(rng: random.Random, d: int) -> tuple[str, int, dict]:
    who, what = rng.choice(WORKS)
    r, h, days = rng.randint(3, 10 * d), rng.randint(2, 4 + 2 * d), rng.randint(2, 3 + 2 * d)
    text = (f"{who.capitalize()} produces {r} {what} per hour. It works {h} hours a day for {days} days. "
            f"How many {what} does it produce in total?")
    return text, r * h * days, {"r": r, "h": h, "days": days}


def _sharing(rng: random.Random, d: int) -> tuple[str, int, dict]:
    name = rng.choice(NAMES)
    friends, each, kept = rng.randint(2, 3 + 2 * d), rng.randint(2, 5 * d + 3), rng.randint(1, 4 * d)
    total = friends * each + kept
    text = (f"{name} has {total} stickers. {name} keeps {kept} and shares the rest equally among "
            f"{friends} friends. How many stickers does each friend get?")
    return text, each, {"total": total, "kept": kept, "friends": friends}


def _discount(rng: random.Random, d: int) -> tuple[str, int, dict]:
    pct = rng.choice([10, 20, 25, 50] if d < 3 else [15, 30, 35, 40, 60])
    price = 20 * rng.randint(1, 5 * d)  # a multiple of 20 keeps every listed discount exact
    n = rng.randint(2, 2 + 2 * d)
    item, items = rng.choice(ITEMS)
    text = (f"A shop sells a {item} for ${price}. During a sale every {item} is {pct}% off. "
            f"How many dollars do {n} {items} cost during the sale?")
    return text, n * price * (100 - pct) // 100, {"price": price, "pct": pct, "n": n}


def _travel(rng: random.Random, d: int) -> tuple[str, int, dict]:
    name = rng.choice(NAMES)
    v1, t1 = rng.randint(20, 30 + 20 * d), rng.randint(1, 1 + d)
    v2, t2 = rng.randint(10, 20 + 15 * d), rng.randint(1, 2 + d)
    text = (f"{name} drives at {v1} km per hour for {t1} hours, then at {v2} km per hour for {t2} hours. "
            f"How many kilometres does {name} drive in total?")
    return text, v1 * t1 + v2 * t2, {"v1": v1, "t1": t1, "v2": v2, "t2": t2}


def _ages(rng: random.Random, d: int) -> tuple[str, int, dict]:
    a, b = rng.sample(NAMES, 2)
    age_a, gap, years = rng.randint(5, 10 + 10 * d), rng.randint(2, 3 + 4 * d), rng.randint(2, 5 * d + 2)
    text = (f"{a} is {age_a} years old. {b} is {gap} years older than {a}. "
            f"What will be the sum of their ages in {years} years?")
    return text, 2 * age_a + gap + 2 * years, {"age_a": age_a, "gap": gap, "years": years}


def _profit(rng: random.Random, d: int) -> tuple[str, int, dict]:
    name = rng.choice(NAMES)
    cows, litres, price = rng.randint(2, 4 + 3 * d), rng.randint(3, 5 + 3 * d), rng.randint(2, 2 + 2 * d)
    feed = rng.randint(1, cows * litres * price - 1)  # keeps the daily profit positive
    days = rng.randint(2, 3 + 2 * d)
    text = (f"{name} has {cows} cows. Each cow gives {litres} litres of milk a day, and {name} sells the milk "
            f"for ${price} per litre. Feeding the cows costs ${feed} a day. "
            f"How many dollars of profit does {name} make in {days} days?")
    return text, days * (cows * litres * price - feed), {"cows": cows, "litres": litres, "price": price,
                                                         "feed": feed, "days": days}


GSM8K_TEMPLATES: dict[str, Callable[[random.Random, int], tuple[str, int, dict]]] = {
    "shopping": _shopping, "rates": _rates, "sharing": _sharing, "discount": _discount,
    "travel": _travel, "ages": _ages, "profit": _profit,
}


def gsm8k_row(rng: random.Random, row_id: str) -> dict:
    template = rng.choice(sorted(GSM8K_TEMPLATES))
    difficulty = rng.randint(1, 3)
    question, answer, operands = GSM8K_TEMPLATES[template](rng, difficulty)
    return {
        "id": row_id,
        "messages": [{"role": "user", "content": f"{question}\n{ANSWER_INSTRUCTION}"}],
        "ground_truth": str(answer),
        "dataset": "gsm8k",
        "meta": {"template": template, "difficulty": difficulty, "operands": operands},
    }


ARITHMETIC_OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "x": lambda a, b: a * b}


def arithmetic_row(rng: random.Random, row_id: str) -> dict:
    """One-step arithmetic with small numbers, scored by the GSM8K checker: a task a 135M model solves often
    enough for group-relative RL to have a signal on a CPU-sized run (multi-step word problems mostly score 0)."""
    op = rng.choice(sorted(ARITHMETIC_OPS))
    if op == "x":
        a, b = rng.randint(2, 12), rng.randint(2, 12)
    else:
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        if op == "-" and b > a:
            a, b = b, a
    answer = ARITHMETIC_OPS[op](a, b)
    question = f"What is {a} {op} {b}?"
    return {
        "id": row_id,
        "messages": [{"role": "user", "content": f'{question} End your reply with "The answer is <number>."'}],
        "ground_truth": str(answer),
        "dataset": "gsm8k",
        "meta": {"template": "arithmetic", "operands": {"a": a, "b": b, "op": op}},
    }


KEYWORDS = ("answer", "the", "is")
KEYWORD_TOPICS = ("the sea", "a cat", "numbers", "friends", "a poem", "apples", "April", "a river", "music")


def keyword_row(rng: random.Random, row_id: str) -> dict:
    """'Say something about T. Use the word "W".', checked by IFEval's keywords:existence. The words are common
    enough that the tiny random test model writes one in ~15% of 16-token samples: the learning check of the RL
    machinery (configs/rlvr/tiny_learn.yaml), not a task that teaches a real model anything."""
    word, topic = rng.choice(KEYWORDS), rng.choice(KEYWORD_TOPICS)
    return {
        "id": row_id,
        "messages": [{"role": "user", "content": f'Say something about {topic}. Use the word "{word}".'}],
        "ground_truth": json.dumps({"instruction_id_list": ["keywords:existence"], "kwargs": [{"keywords": [word]}]}),
        "dataset": "ifeval",
        "meta": {"task": "keyword", "word": word},
    }


# Worked solutions. A solution is a list of steps (text format, operator, left, right) whose operands are numbers
# or names of earlier results; `slip` = (step index, delta) adds delta to that step's result and carries the wrong
# value through the later steps, as a student's arithmetic slip would.

SOLUTION_STEPS: dict[str, Callable[[dict], list[tuple[str, str, str, object, object]]]] = {
    "shopping": lambda o: [
        ("s1", "The first items cost {a} x ${b} = ${r}.", "*", o["a"], o["p"]),
        ("s2", "The second items cost {a} x ${b} = ${r}.", "*", o["b"], o["q"]),
        ("s3", "Together they cost ${a} + ${b} = ${r}.", "+", "s1", "s2"),
        ("s4", "The change is ${a} - ${b} = ${r}.", "-", o["bill"], "s3")],
    "rates": lambda o: [
        ("s1", "In one day it produces {a} x {b} = {r}.", "*", o["r"], o["h"]),
        ("s2", "In {b} days it produces {a} x {b} = {r}.", "*", "s1", o["days"])],
    "sharing": lambda o: [
        ("s1", "After keeping {b} there are {a} - {b} = {r} stickers left.", "-", o["total"], o["kept"]),
        ("s2", "Each friend gets {a} / {b} = {r}.", "/", "s1", o["friends"])],
    "discount": lambda o: [
        ("s1", "The discount on one item is {a}% of ${b} = ${r}.", "%", o["pct"], o["price"]),
        ("s2", "One item costs ${a} - ${b} = ${r} during the sale.", "-", o["price"], "s1"),
        ("s3", "{b} items cost {b} x ${a} = ${r}.", "*", "s2", o["n"])],
    "travel": lambda o: [
        ("s1", "The first part is {a} x {b} = {r} km.", "*", o["v1"], o["t1"]),
        ("s2", "The second part is {a} x {b} = {r} km.", "*", o["v2"], o["t2"]),
        ("s3", "In total that is {a} + {b} = {r} km.", "+", "s1", "s2")],
    "ages": lambda o: [
        ("s1", "The older one is {a} + {b} = {r} years old now.", "+", o["age_a"], o["gap"]),
        ("s2", "Their ages now add up to {a} + {b} = {r}.", "+", o["age_a"], "s1"),
        ("s3", "Each gets {b} years older, so the sum grows by 2 x {b} = {r}.", "*", 2, o["years"]),
        ("s4", "The sum will be {a} + {b} = {r}.", "+", "s2", "s3")],
    "profit": lambda o: [
        ("s1", "The cows give {a} x {b} = {r} litres a day.", "*", o["cows"], o["litres"]),
        ("s2", "The milk sells for {a} x ${b} = ${r} a day.", "*", "s1", o["price"]),
        ("s3", "The daily profit is ${a} - ${b} = ${r}.", "-", "s2", o["feed"]),
        ("s4", "Over {b} days that is {a} x {b} = ${r}.", "*", "s3", o["days"])],
}


def _apply(op: str, a: int, b: int) -> int | None:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if op == "%":  # a percent of b
        return a * b // 100 if (a * b) % 100 == 0 else None
    return a // b if b and a % b == 0 else None  # "/": exact division only


def worked_solution(template: str, operands: dict, slip: tuple[int, int] | None = None) -> tuple[str, int] | None:
    """The step-by-step solution text (ending "The answer is N.") and N; None when a slip makes a later step
    inexact (a division or percentage that no longer comes out whole)."""
    values: dict[str, int] = {}
    lines = []
    steps = SOLUTION_STEPS[template](operands)
    for i, (name, fmt, op, left, right) in enumerate(steps):
        a = values[left] if isinstance(left, str) else int(left)
        b = values[right] if isinstance(right, str) else int(right)
        r = _apply(op, a, b)
        if r is None:
            return None
        if slip is not None and slip[0] == i:
            r += slip[1]
        values[name] = r
        lines.append(fmt.format(a=a, b=b, r=r))
    answer = values[steps[-1][0]]
    lines.append(f"The answer is {answer}.")
    return " ".join(lines), answer


def _solved_problem(rng: random.Random, row_id: str) -> tuple[dict, str, int]:
    row = gsm8k_row(rng, row_id)
    meta = row["meta"]
    solved = worked_solution(meta["template"], meta["operands"])
    if solved is None or str(solved[1]) != row["ground_truth"]:  # the templates and the steps must agree
        raise AssertionError(f"worked solution of {meta} does not reach {row['ground_truth']}")
    return row, *solved


def gsm8k_sft_row(rng: random.Random, row_id: str) -> dict:
    row, solution, _ = _solved_problem(rng, row_id)
    return {"id": row_id, "messages": [*row["messages"], {"role": "assistant", "content": solution}],
            "ground_truth": row["ground_truth"], "dataset": "gsm8k_sft", "meta": row["meta"]}


def gsm8k_pref_row(rng: random.Random, row_id: str) -> dict:
    row, solution, answer = _solved_problem(rng, row_id)
    meta = row["meta"]
    n_steps = len(SOLUTION_STEPS[meta["template"]](meta["operands"]))
    wrong = None
    while wrong is None or wrong[1] == answer:
        # Try a slip in a random step; one in the last step always stays whole and changes the answer.
        step = rng.randrange(n_steps) if wrong is None else n_steps - 1
        delta = rng.choice([-10, -2, -1, 1, 2, 10])
        wrong = worked_solution(meta["template"], meta["operands"], slip=(step, delta))
        if wrong is None:
            wrong = worked_solution(meta["template"], meta["operands"], slip=(n_steps - 1, delta))
    user = row["messages"]
    return {"id": row_id,
            "chosen": [*user, {"role": "assistant", "content": solution}],
            "rejected": [*user, {"role": "assistant", "content": wrong[0]}],
            "ground_truth": row["ground_truth"], "dataset": "gsm8k_pref",
            "meta": {**meta, "rejected_answer": wrong[1]}}


# ---------------------------------------------------------------------------------------------------------------

ROW_BUILDERS: dict[str, Callable[[random.Random, str], dict]] = {
    "gsm8k": gsm8k_row, "ifeval": ifeval_row, "gsm8k_sft": gsm8k_sft_row, "gsm8k_pref": gsm8k_pref_row,
    "arithmetic": arithmetic_row, "keyword": keyword_row}


def generate(task: str, n: int, seed: int) -> list[dict]:
    """`n` rows of `task` (one of TASKS) for `seed`; identical for identical arguments."""
    if task not in TASKS:
        raise ValueError(f"unknown procedural task {task!r}; choose one of {', '.join(TASKS)}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rows = []
    for i in range(n):
        rng = random.Random(f"{task}/{seed}/{i}")
        kind = task if task != "mixed" else rng.choice(["gsm8k", "ifeval"])
        row_id = f"procedural-{task}-s{seed}-{i}"
        rows.append(ROW_BUILDERS[kind](rng, row_id))
    return rows


def parse_procedural_spec(spec: str) -> tuple[str, int, int]:
    """`"procedural:gsm8k?n=256&seed=0"` -> `("gsm8k", 256, 0)`. `n` defaults to 1000 and `seed` to 0."""
    if not spec.startswith(SPEC_PREFIX):
        raise ProceduralSpecError(f"{spec!r} is not a procedural source; expected {SPEC_PREFIX}TASK?n=N&seed=S")
    body = spec[len(SPEC_PREFIX):]
    task, _, query = body.partition("?")
    if task not in TASKS:
        raise ProceduralSpecError(f"{spec!r}: unknown task {task!r}; choose one of {', '.join(TASKS)}")
    values = {"n": DEFAULT_N, "seed": 0}
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True) if query else []
    except ValueError:
        raise ProceduralSpecError(f"{spec!r}: parameters must look like n=256&seed=0") from None
    for key, raw in pairs:
        if key not in values:
            raise ProceduralSpecError(f"{spec!r}: unknown parameter {key!r}; known: n, seed")
        try:
            values[key] = int(raw)
        except ValueError:
            raise ProceduralSpecError(f"{spec!r}: {key}={raw!r} is not an integer") from None
    if values["n"] < 0:
        raise ProceduralSpecError(f"{spec!r}: n must be >= 0")
    return task, values["n"], values["seed"]


def is_procedural_spec(source: str) -> bool:
    return isinstance(source, str) and source.startswith(SPEC_PREFIX)


def load_procedural(spec: str) -> list[dict]:
    """Rows for a `procedural:` source string."""
    return generate(*parse_procedural_spec(spec))
