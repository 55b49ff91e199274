"""`rlvr data synth` (procedural verifiable tasks to jsonl) and `rlvr data contamination` (n-gram overlap of
training prompts with evaluation sets)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from core.procedural import ProceduralSpecError, generate
from rlvr.data.contamination import (
    ContaminationInputError,
    contamination_report,
    format_table,
    load_eval_items,
    load_train_prompts,
)
from rlvr.eval.data import EvalDataError


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", required=True, metavar="{synth,contamination}")
    s = sub.add_parser("synth", help="write procedural verifiable tasks (Tulu 3 RLVR schema) as jsonl",
                       description="Write procedural verifiable tasks in the Tulu 3 RLVR row schema. The same "
                                   "seed gives identical rows. As a data source elsewhere: procedural:TASK?n=N&seed=S")
    s.add_argument("--task", required=True, choices=["gsm8k", "ifeval", "mixed"])
    s.add_argument("--n", type=int, required=True, help="number of rows")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", required=True, help="output .jsonl file ('-' for stdout)")

    c = sub.add_parser("contamination", help="n-gram overlap of training prompts with evaluation sets",
                       description="Per evaluation set, count the items that share a word n-gram (lowercased, "
                                   "punctuation stripped) with any training prompt.")
    c.add_argument("--train", nargs="+", required=True,
                   help="training data: jsonl/json/jsonl.gz/parquet files or procedural:TASK?n=N&seed=S specs")
    c.add_argument("--eval", nargs="+", required=True,
                   help="evaluation sets: task names (gsm8k, ifeval, arc_easy, arc_challenge, hellaswag) or files")
    c.add_argument("--n", type=int, default=8, help="n-gram length in words (default 8)")
    c.add_argument("--data-dir", default=None, help="local eval data (default: ../shared/data if present)")
    c.add_argument("--examples", type=int, default=5, help="examples kept per eval set")
    c.add_argument("--out", default=None, help="write the report as JSON here")


def _synth(args: argparse.Namespace) -> int:
    if args.n < 0:
        raise ProceduralSpecError(f"--n must be >= 0, got {args.n}")
    rows = generate(args.task, args.n, args.seed)
    text = "".join(json.dumps(r) + "\n" for r in rows)
    if args.out == "-":
        sys.stdout.write(text)
    else:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        print(f"wrote {len(rows)} {args.task} rows (seed {args.seed}) to {out}")
    return 0


def _contamination(args: argparse.Namespace) -> int:
    prompts: list[str] = []
    for source in args.train:
        prompts.extend(load_train_prompts(source))
    eval_sets = dict(load_eval_items(source, args.data_dir) for source in args.eval)
    reports = contamination_report(prompts, eval_sets, n=args.n, max_examples=args.examples)
    print(f"{len(prompts)} training prompts from {', '.join(args.train)}; {args.n}-gram overlap:")
    print(format_table(reports, args.n))
    for r in reports:
        for ex in r.examples:
            print(f"  {r.dataset} {ex['id']}: \"{ex['shared_ngram']}\" ({ex['n_shared']} shared)")
    if args.out:
        payload = {"n": args.n, "train": args.train, "n_train_prompts": len(prompts),
                   "datasets": [r.to_dict() for r in reports]}
        Path(args.out).write_text(json.dumps(payload, indent=2))
        print(f"report written to {args.out}")
    return 0


def cli_main(args: argparse.Namespace) -> int:
    try:
        if args.data_command == "synth":
            return _synth(args)
        return _contamination(args)
    except (ProceduralSpecError, ContaminationInputError, EvalDataError) as err:  # bad input: say which, no traceback
        print(f"rlvr data {args.data_command}: error: {err}", file=sys.stderr)
        return 2
