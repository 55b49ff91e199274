"""`rlvr compare BEFORE.json AFTER.json [--out DIR]`: what changed between two IFEval evaluations of the same
prompts (each written by `rlvr eval --tasks ifeval --out FILE.json --log-samples`), so that a gain can be read
for what it is:

- the four IFEval accuracies before -> after, each with its 95% Wilson interval, and whether they overlap;
- the accuracy of each instruction id (strict and loose) before -> after, with its count;
- the mean response length in words and characters, and the share of responses that still answer the prompt
  (rewards.ifeval.answer: enough text, no loop) — a policy that games the checkers with empty or looping
  replies shows up here, not in the accuracies;
- sample responses before and after, for the same prompts (every k-th prompt, so the choice is fixed);
- a picture of the per-instruction accuracies (`ifeval_per_instruction.png`).

With `--out DIR` it writes `report.md`, `samples.md` and the PNG there; the report is also printed.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import defaultdict
from pathlib import Path

from core.metrics import mean_ci95
from rewards.ifeval.answer import instructions_answer_problem
from rewards.jsonl import read_jsonl

ACCURACIES = ("prompt_level_strict_acc", "prompt_level_loose_acc", "inst_level_strict_acc", "inst_level_loose_acc")
_WORDS_RE = re.compile(r"\w+")


class CompareError(ValueError):
    """An input file is missing or is not an IFEval result with samples; the message names it."""


def load_run(results_path: str | Path) -> tuple[dict, list[dict]]:
    """(the `rlvr eval --out` JSON, its IFEval samples) — the samples file sits beside it."""
    path = Path(results_path)
    if not path.is_file():
        raise CompareError(f"{path}: no such results file (write it with rlvr eval --out {path} --log-samples)")
    meta = json.loads(path.read_text())
    if "ifeval" not in meta.get("results", {}):
        raise CompareError(f"{path}: holds no ifeval results (tasks: {', '.join(meta.get('results', {})) or 'none'})")
    samples = path.with_suffix(".ifeval.samples.jsonl")
    if not samples.is_file():
        raise CompareError(f"{samples}: missing; re-run rlvr eval with --log-samples")
    try:
        rows = [row for _, row in read_jsonl(samples)]
    except ValueError as err:
        raise CompareError(str(err)) from None
    return meta, rows


def _prompt_table(rows: list[dict]) -> dict[str, list[float]]:
    """Per-prompt and per-instruction 0/1 verdicts of one run, for the accuracies and their intervals."""
    out: dict[str, list[float]] = {k: [] for k in ACCURACIES}
    for r in rows:
        out["prompt_level_strict_acc"].append(float(all(r["strict"])))
        out["prompt_level_loose_acc"].append(float(all(r["loose"])))
        out["inst_level_strict_acc"] += [float(v) for v in r["strict"]]
        out["inst_level_loose_acc"] += [float(v) for v in r["loose"]]
    return out


def per_instruction(rows: list[dict]) -> dict[str, tuple[int, float, float]]:
    """instruction id -> (count, strict accuracy, loose accuracy)."""
    acc: dict[str, list[tuple[bool, bool]]] = defaultdict(list)
    for r in rows:
        for iid, s, lo in zip(r["instruction_id_list"], r["strict"], r["loose"]):
            acc[iid].append((bool(s), bool(lo)))
    return {iid: (len(v), sum(s for s, _ in v) / len(v), sum(lo for _, lo in v) / len(v))
            for iid, v in sorted(acc.items())}


def response_stats(rows: list[dict]) -> dict[str, float]:
    """Mean words and characters per response, and the share that answer (rewards.ifeval.answer: enough text in
    words the prompt does not contain, no loop)."""
    n = max(len(rows), 1)
    answering = sum(instructions_answer_problem(r["response"], r["instruction_id_list"],
                                                r.get("kwargs") or [{}] * len(r["instruction_id_list"]),
                                                prompt=r.get("prompt")) is None for r in rows)
    return {"words": sum(len(_WORDS_RE.findall(r["response"])) for r in rows) / n,
            "chars": sum(len(r["response"]) for r in rows) / n,
            "answering": answering / n, "empty": sum(not r["response"].strip() for r in rows) / n}


def compare(before: list[dict], after: list[dict]) -> dict:
    """The comparison of two sample lists over the same prompts (matched by id)."""
    ids_b, ids_a = [r["id"] for r in before], [r["id"] for r in after]
    if set(ids_b) != set(ids_a):
        only = sorted(set(ids_b) ^ set(ids_a))
        raise CompareError(f"the two runs evaluated different prompts ({len(only)} differ, e.g. {only[:3]}); "
                           "compare runs of the same task and --limit")
    order = {i: k for k, i in enumerate(ids_b)}
    after = sorted(after, key=lambda r: order[r["id"]])
    acc = {}
    for name in ACCURACIES:
        b, a = _prompt_table(before)[name], _prompt_table(after)[name]
        mb, lb, hb = mean_ci95(b)
        ma, la, ha = mean_ci95(a)
        acc[name] = {"before": mb, "before_ci": [lb, hb], "after": ma, "after_ci": [la, ha], "n": len(b),
                     "intervals_overlap": not (la > hb or lb > ha)}
    inst_b, inst_a = per_instruction(before), per_instruction(after)
    table = {iid: {"n": inst_b[iid][0], "strict_before": inst_b[iid][1], "strict_after": inst_a[iid][1],
                   "loose_before": inst_b[iid][2], "loose_after": inst_a[iid][2]} for iid in inst_b}
    return {"accuracies": acc, "per_instruction": table, "prompts": len(before),
            "before_rows": before, "after_rows": after}


def format_report(result: dict, stats_before: dict, stats_after: dict, names: tuple[str, str]) -> str:
    lines = [f"# IFEval: {names[0]} -> {names[1]} ({result['prompts']} prompts)", "",
             "| metric | before [95% CI] | after [95% CI] | change | intervals overlap |", "|---|---|---|---|---|"]
    for name, r in result["accuracies"].items():
        lines.append(f"| {name} | {r['before']:.3f} [{r['before_ci'][0]:.3f}, {r['before_ci'][1]:.3f}] | "
                     f"{r['after']:.3f} [{r['after_ci'][0]:.3f}, {r['after_ci'][1]:.3f}] | "
                     f"{100 * (r['after'] - r['before']):+.1f} pts | {'yes' if r['intervals_overlap'] else 'no'} |")
    lines += ["", "| responses | before | after |", "|---|---|---|",
              f"| mean words | {stats_before['words']:.0f} | {stats_after['words']:.0f} |",
              f"| mean characters | {stats_before['chars']:.0f} | {stats_after['chars']:.0f} |",
              f"| answer the prompt (enough text, no loop) | {stats_before['answering']:.1%} | "
              f"{stats_after['answering']:.1%} |",
              f"| empty | {stats_before['empty']:.1%} | {stats_after['empty']:.1%} |",
              "", "| instruction | n | strict before | strict after | loose before | loose after |",
              "|---|---|---|---|---|---|"]
    for iid, r in sorted(result["per_instruction"].items(), key=lambda kv: -kv[1]["n"]):
        lines.append(f"| {iid} | {r['n']} | {r['strict_before']:.2f} | {r['strict_after']:.2f} | "
                     f"{r['loose_before']:.2f} | {r['loose_after']:.2f} |")
    return "\n".join(lines) + "\n"


def format_samples(result: dict, count: int) -> str:
    rows_b, rows_a = result["before_rows"], result["after_rows"]
    step = max(1, len(rows_b) // max(count, 1))
    lines = [f"# {min(count, len(rows_b))} sample responses before and after (every {step}th prompt)", ""]
    for b, a in list(zip(rows_b, rows_a))[::step][:count]:
        lines += [f"## {b['id']}: {', '.join(b['instruction_id_list'])}", "",
                  "**Prompt:** " + b.get("prompt", "(not in the samples file)").replace("\n", " "), "",
                  f"**Before** (strict {b['strict']}):", "", "```", b["response"].strip(), "```", "",
                  f"**After** (strict {a['strict']}):", "", "```", a["response"].strip(), "```", ""]
    return "\n".join(lines)


def plot_per_instruction(result: dict, path: Path) -> None:
    import matplotlib  # lazy: only when a picture is written

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    items = sorted(result["per_instruction"].items(), key=lambda kv: kv[1]["strict_after"] - kv[1]["strict_before"])
    labels = [f"{iid} ({r['n']})" for iid, r in items]
    y = range(len(items))
    fig, ax = plt.subplots(figsize=(9, 0.32 * len(items) + 1.6))
    ax.barh([i + 0.2 for i in y], [r["strict_before"] for _, r in items], height=0.4, label="before", color="#999")
    ax.barh([i - 0.2 for i in y], [r["strict_after"] for _, r in items], height=0.4, label="after", color="#2a7")
    ax.set_yticks(list(y), labels, fontsize=7)
    ax.set_xlim(0, 1)
    acc = result["accuracies"]["prompt_level_strict_acc"]
    ax.set_title(f"IFEval strict accuracy per instruction (prompt-level {acc['before']:.3f} -> {acc['after']:.3f}, "
                 f"{result['prompts']} prompts)", fontsize=9)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("before", help="results JSON of the first evaluation (rlvr eval --out FILE --log-samples)")
    parser.add_argument("after", help="results JSON of the second evaluation, same prompts")
    parser.add_argument("--out", default=None, help="folder for report.md, samples.md, ifeval_per_instruction.png")
    parser.add_argument("--samples", type=int, default=20, help="sample responses to show (default 20)")


def cli_main(args: argparse.Namespace) -> int:
    try:
        meta_b, before = load_run(args.before)
        meta_a, after = load_run(args.after)
        result = compare(before, after)
    except CompareError as err:
        print(f"rlvr compare: error: {err}", file=sys.stderr)
        return 2
    report = format_report(result, response_stats(before), response_stats(after),
                           (meta_b.get("model", args.before), meta_a.get("model", args.after)))
    print(report)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.md").write_text(report)
        (out / "samples.md").write_text(format_samples(result, args.samples))
        summary = {k: v for k, v in result.items() if not k.endswith("_rows")}
        (out / "compare.json").write_text(json.dumps(summary, indent=1))
        plot_per_instruction(result, out / "ifeval_per_instruction.png")
        print(f"written to {out}/ (report.md, samples.md, compare.json, ifeval_per_instruction.png)")
    return 0
