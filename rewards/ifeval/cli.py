"""The IFEval part of `rlvr verify` (a hook registered in `rlvr.verify.HOOKS`).

    rlvr verify --verifier ifeval --input RESPONSES.jsonl --prompts ../shared/data/ifeval/input_data.jsonl

joins each `{"key" | "prompt": ..., "response": ...}` row to the prompts file (on `key` when the row has one, else
on the exact prompt text), scores it, and adds the four standard accuracies to the summary: prompt-level and
instruction-level, strict and loose. Without `--prompts`, rows carry their own `ground_truth`.
"""

from __future__ import annotations

import sys

from rewards.ifeval.evaluation import PromptIndex, accuracies, check_instructions


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
        for row in rows:
            target, how = index.find(row.record)
            if target is None:
                print(f"{args.input}:{row.line}: cannot join to {args.prompts}: {how} not found", file=sys.stderr)
                continue
            row.label = {"instruction_id_list": target["instruction_id_list"], "kwargs": target["kwargs"]}
            row.prompt = target["prompt"]
        return rows

    @staticmethod
    def report(args, rows, batch) -> dict[str, float]:
        from rewards.ifeval import GoogleInstructions, parse_ground_truth

        results = []
        for row in rows:
            try:
                units = parse_ground_truth(row.label)
            except ValueError:
                continue  # already counted as an error by the scoring pass
            if not units or not all(isinstance(u, GoogleInstructions) for u in units):
                continue  # Tulu constraints have no strict/loose accuracies
            ids = [i for u in units for i in u.instruction_ids]
            kwargs = [k for u in units for k in u.kwargs]
            results.append(check_instructions(row.response, ids, kwargs, prompt=row.prompt))
        if not results:
            return {}
        return {"ifeval_prompts": len(results), **accuracies(results)}


HOOK = IFEvalVerifyHook()
