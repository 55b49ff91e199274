"""The IFEval part of `rlvr verify` (a hook registered in `rewards.cli.HOOKS`).

    rlvr verify --verifier ifeval --input RESPONSES.jsonl --prompts ../shared/data/ifeval/input_data.jsonl \
        [--out results.jsonl | --format google --out DIR]

joins each `{"key" | "prompt": ..., "response": ...}` row to the prompts file (on `key` when the row has one, else
on the exact prompt text), scores it, and adds the four standard accuracies to the summary: prompt-level and
instruction-level, strict and loose. Without `--prompts`, rows carry their own `ground_truth`.

For rows with Google-format instructions, each `--out` line also carries Google's per-instruction lists:
`instruction_id_list`, `follow_instruction_list` (strict) and `follow_instruction_list_loose`. `--format google`
writes `eval_results_strict.jsonl` and `eval_results_loose.jsonl` into `--out DIR` in the format of Google's
`evaluation_main`: one line per prompt (in the prompts file's order with `--prompts`, else the input's order;
a prompt without a response is skipped and reported, where Google's tool stops with a KeyError), keys
`follow_all_instructions`, `follow_instruction_list`, `instruction_id_list`, `prompt`, `response`, written by
`json.dumps` with its default settings. These lists check the whole response (no `max_chars` truncation, as
Google's evaluator), bounded by the pool's time limit instead.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from rewards.ifeval.evaluation import InstructionResults, PromptIndex, accuracies, check_instructions
from rewards.ifeval.ground_truth import GoogleInstructions, parse_ground_truth

STRICT_FILE, LOOSE_FILE = "eval_results_strict.jsonl", "eval_results_loose.jsonl"


def google_lists(response: str, instruction_ids: list[str], kwargs: list[Any], prompt: str | None):
    """(strict, loose) per-instruction verdicts, as Google's evaluator computes them (runs in a pool worker)."""
    res = check_instructions(response, instruction_ids, kwargs, prompt=prompt, max_chars=None)
    return list(res.strict), list(res.loose)


def _google_units(label: Any) -> tuple[list[str], list[Any]] | None:
    """The Google-format instruction ids and kwargs of a label, or None (Tulu constraints, malformed label)."""
    try:
        units = parse_ground_truth(label)
    except ValueError:
        return None  # already counted as an error by the scoring pass
    if not units or not all(isinstance(u, GoogleInstructions) for u in units):
        return None  # Tulu constraints have no strict/loose lists
    return [i for u in units for i in u.instruction_ids], [k for u in units for k in u.kwargs]


class IFEvalVerifyHook:
    @staticmethod
    def add_cli_arguments(parser) -> None:
        parser.add_argument("--prompts", default=None,
                            help="ifeval: IFEval prompts jsonl (key, prompt, instruction_id_list, kwargs) to join "
                                 "responses to, on key or prompt; adds strict/loose prompt/instruction accuracies")

    @staticmethod
    def prepare(args, rows):
        if not getattr(args, "prompts", None):
            return rows
        index = PromptIndex(args.prompts)
        args.ifeval_prompt_rows = index.rows
        args.ifeval_joined = {}  # input line -> the prompt row it joined to
        joined = 0
        for row in rows:
            target, how = index.find(row.record)
            if target is None:
                print(f"{args.input}:{row.line}: cannot join to {args.prompts}: {how} not found", file=sys.stderr)
                continue
            row.label = {"instruction_id_list": target["instruction_id_list"], "kwargs": target["kwargs"]}
            row.prompt = target["prompt"]
            args.ifeval_joined[row.line] = target
            joined += 1
        if rows and not joined:
            raise ValueError(f"none of the {len(rows)} rows of {args.input} joins to {args.prompts} "
                             "(on 'key', else the exact 'prompt' text)")
        return rows

    @staticmethod
    def annotate(args, rows, pool) -> None:
        """Google's per-instruction lists for each row with Google-format instructions, computed in `pool`."""
        todo = []
        for row in rows:
            units = _google_units(row.label)
            if units is not None:
                todo.append((row, units))
        outcomes = pool.map(google_lists, [(r.response, ids, kw, r.prompt) for r, (ids, kw) in todo])
        for (row, (ids, _)), outcome in zip(todo, outcomes):
            row.details["instruction_id_list"] = ids
            if outcome.ok:
                strict, loose = outcome.value
                row.details["follow_instruction_list"] = strict
                row.details["follow_instruction_list_loose"] = loose
            else:
                row.details["ifeval_error"] = f"{outcome.status}: {outcome.message}"

    @staticmethod
    def report(args, rows, batch) -> dict[str, float]:
        results = [InstructionResults(r.details["instruction_id_list"], r.details["follow_instruction_list"],
                                      r.details["follow_instruction_list_loose"])
                   for r in rows if "follow_instruction_list" in r.details]
        if not results:
            return {}
        return {"ifeval_prompts": len(results), **accuracies(results)}

    @staticmethod
    def write_format(args, rows, fmt: str, out_dir: Path) -> list[Path]:
        if fmt != "google":
            raise ValueError(f"ifeval: unknown --format {fmt!r}")
        scored = [r for r in rows if "follow_instruction_list" in r.details]
        if not scored:
            raise ValueError("--format google: no row has Google-format IFEval instructions with a verdict")
        prompt_rows = getattr(args, "ifeval_prompt_rows", None)
        if prompt_rows is not None:  # Google's order: the prompts file's; its dict keeps the last response
            by_target = {id(args.ifeval_joined[r.line]): r for r in scored if r.line in args.ifeval_joined}
            ordered = [(p["prompt"], by_target.get(id(p))) for p in prompt_rows]
            missing = [prompt for prompt, row in ordered if row is None]
            if missing:
                print(f"--format google: {len(missing)} prompt(s) of {args.prompts} have no scored response and are "
                      f"left out, e.g. {missing[0][:80]!r}", file=sys.stderr)
            ordered = [(prompt, row) for prompt, row in ordered if row is not None]
        else:
            ordered = [(r.prompt or "", r) for r in scored]
        out_dir.mkdir(parents=True, exist_ok=True)
        written = []
        for name, key in ((STRICT_FILE, "follow_instruction_list"), (LOOSE_FILE, "follow_instruction_list_loose")):
            path = out_dir / name
            with path.open("w") as f:
                for prompt, row in ordered:
                    follow = row.details[key]
                    f.write(json.dumps({"follow_all_instructions": all(follow), "follow_instruction_list": follow,
                                        "instruction_id_list": row.details["instruction_id_list"],
                                        "prompt": prompt, "response": row.response}))
                    f.write("\n")
            written.append(path)
        return written


HOOK = IFEvalVerifyHook()
