"""`rlvr eval --model PATH_OR_NAME --tasks gsm8k,ifeval,arc_easy,arc_challenge,hellaswag [--limit N] ...`

Which numbers compare with lm-evaluation-harness 0.4.x (`lm_eval --model hf --tasks ...`, default settings):
arc_easy, arc_challenge, hellaswag (0-shot acc and acc_norm: the same requests and tokenisation) and
gsm8k_lm_eval (lm-eval's `gsm8k` task: 5-shot plain text, strict-match and flexible-extract). Our `gsm8k` (chat
template, our verifier) and `ifeval` (generation through the chat template, Google's checkers) are our own
protocols.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time

from core.models import UnknownModelError
from rlvr.eval.data import EVAL_TASKS, EvalDataError


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="model folder, hub name, or bundled name (smollm2-135m-instruct)")
    parser.add_argument("--tasks", default="gsm8k,ifeval,arc_easy,arc_challenge,hellaswag",
                        help=f"comma-separated: {', '.join(EVAL_TASKS)} ('arc' = both ARC sets; gsm8k_lm_eval = "
                             "lm-eval's GSM8K protocol); default: gsm8k,ifeval,arc_easy,arc_challenge,hellaswag")
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N items of each task")
    parser.add_argument("--out", default=None, help="results JSON file (per-item samples go beside it with --log-samples)")
    parser.add_argument("--log-samples", action="store_true", help="also write per-item responses/scores as jsonl")
    parser.add_argument("--data-dir", default=None, help="local data folder (default: ../shared/data if present)")
    parser.add_argument("--source", default="auto", choices=["auto", "local", "hub"],
                        help="auto: local files when a data dir exists, else the Hugging Face hub")
    parser.add_argument("--backend", default="auto", choices=["auto", "vllm", "hf"],
                        help="generation backend (auto: vLLM when installed)")
    parser.add_argument("--num-fewshot", type=int, default=None,
                        help="GSM8K few-shot examples: gsm8k (ours) as prior chat turns, default 0; gsm8k_lm_eval "
                             "(lm-eval's protocol) as plain text, default 5")
    parser.add_argument("--max-new-tokens", type=int, default=None,
                        help="default: gsm8k and gsm8k_lm_eval 256, ifeval 512")
    parser.add_argument("--batch-size", type=int, default=8, help="generation and scoring batch size")
    parser.add_argument("--max-model-len", type=int, default=2048, help="vLLM context length")


def cli_main(args: argparse.Namespace) -> int:
    # lazy: the runner loads torch and transformers (seconds); `rlvr eval --help` answers without them
    from rlvr.eval.runner import evaluate, format_results, write_results

    records: dict[str, list[dict]] = {}
    timings: dict[str, float] = {}
    start = time.perf_counter()
    try:
        results = evaluate(args.model, args.tasks, limit=args.limit, data_dir=args.data_dir, source=args.source,
                           backend=args.backend, num_fewshot=args.num_fewshot,
                           max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                           max_model_len=args.max_model_len, records_out=records, timings_out=timings)
    except (EvalDataError, UnknownModelError) as err:  # bad task name, missing data file, unknown bundled model
        print(f"rlvr eval: error: {err}", file=sys.stderr)
        return 2
    wall = time.perf_counter() - start
    print(format_results(results))
    print(f"total {wall:.0f} s")
    if args.out:
        meta = {"model": args.model, "tasks": list(results), "limit": args.limit, "backend": args.backend,
                "num_fewshot": args.num_fewshot, "max_new_tokens": args.max_new_tokens,
                "seconds": {**timings, "total": wall}, "host": platform.node()}
        write_results(args.out, results, meta, records if args.log_samples else None)
        print(f"results written to {args.out}")
    return 0
