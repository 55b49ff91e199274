"""`evaluate(model, tasks, ...)`: load each task's docs, run it, return {task: {metric: value}}.

Generative tasks (gsm8k, ifeval) share one generator (vLLM or HF); multiple-choice tasks (arc_easy, arc_challenge,
hellaswag) share one HF log-likelihood scorer. Each model is loaded only if a task needs it.
"""

from __future__ import annotations

import gc
import json
import time
from collections.abc import Sequence
from pathlib import Path

from core.logging import get_logger
from core.models import resolve_model
from rlvr.eval.data import DATA_OF, EVAL_TASKS, EvalDataError, load_task_docs
from rlvr.eval.generation import make_generator
from rlvr.eval.loglik import LoglikScorer
from rlvr.eval.tasks import GENERATIVE, MULTIPLE_CHOICE
from rlvr.eval.tasks.gsm8k import evaluate_gsm8k
from rlvr.eval.tasks.gsm8k_lm_eval import NUM_FEWSHOT, evaluate_gsm8k_lm_eval
from rlvr.eval.tasks.ifeval import evaluate_ifeval
from rlvr.eval.tasks.multiple_choice import evaluate_multiple_choice

log = get_logger(__name__)

DEFAULT_MAX_NEW_TOKENS = {"gsm8k": 256, "gsm8k_lm_eval": 256, "ifeval": 512}


def parse_tasks(tasks: str | Sequence[str]) -> list[str]:
    names = [t.strip() for t in tasks.split(",")] if isinstance(tasks, str) else [t.strip() for t in tasks]
    names = [t for t in names if t]
    if "arc" in names:  # shorthand for both ARC sets
        i = names.index("arc")
        names[i:i + 1] = ["arc_easy", "arc_challenge"]
    unknown = [t for t in names if t not in EVAL_TASKS]
    if unknown or not names:
        raise EvalDataError(f"unknown eval task(s) {unknown or tasks!r}; known: {', '.join(EVAL_TASKS)} (or arc)")
    return list(dict.fromkeys(names))


def evaluate(model: str, tasks: str | Sequence[str], *, limit: int | None = None,
             data_dir: str | Path | None = None, source: str = "auto", backend: str = "auto",
             num_fewshot: int | None = None, max_new_tokens: int | None = None, batch_size: int = 8,
             max_model_len: int = 2048, generator=None, scorer=None,
             records_out: dict[str, list[dict]] | None = None,
             timings_out: dict[str, float] | None = None) -> dict[str, dict[str, float]]:
    """Evaluate `model` (folder, hub name or bundled name) on `tasks` ("gsm8k,ifeval,..." or a list).

    limit: the first `limit` docs of each task. num_fewshot: GSM8K training examples (gsm8k: prior chat turns,
    default 0; gsm8k_lm_eval: lm-eval's plain-text shots, default 5). max_new_tokens: overrides the per-task
    default (gsm8k and gsm8k_lm_eval 256, ifeval 512). `generator`/`scorer` may be passed
    in (tests, or a caller that already holds the model). Per-item records and per-task seconds are written
    into `records_out` / `timings_out` when given.
    """
    names = parse_tasks(tasks)
    path = resolve_model(model)
    results = _run_tasks(names, path, limit=limit, data_dir=data_dir, source=source, backend=backend,
                         num_fewshot=num_fewshot, max_new_tokens=max_new_tokens, batch_size=batch_size,
                         max_model_len=max_model_len, generator=generator, scorer=scorer,
                         records_out=records_out, timings_out=timings_out)
    # Models loaded by _run_tasks are unreachable now; collect them before returning, since a sweep calls this
    # once per trial in the same process.
    gc.collect()
    return results


def _run_tasks(names, path, *, limit, data_dir, source, backend, num_fewshot, max_new_tokens, batch_size,
               max_model_len, generator, scorer, records_out, timings_out) -> dict[str, dict[str, float]]:
    results: dict[str, dict[str, float]] = {}
    for task in names:
        start = time.perf_counter()
        docs = load_task_docs(DATA_OF.get(task, task), data_dir=data_dir, source=source)
        if limit is not None:
            docs = docs[:limit]
        log.info("%s: %d docs", task, len(docs))
        if task in GENERATIVE:
            if generator is None:
                generator = make_generator(path, backend, batch_size=batch_size, max_model_len=max_model_len)
            new_tokens = max_new_tokens or DEFAULT_MAX_NEW_TOKENS[task]
            if task == "gsm8k":
                k = num_fewshot or 0
                shots = load_task_docs("gsm8k", data_dir=data_dir, source=source, split="train") if k else []
                metrics, records = evaluate_gsm8k(docs, generator, max_new_tokens=new_tokens,
                                                  fewshot_docs=shots, num_fewshot=k)
            elif task == "gsm8k_lm_eval":
                shots = load_task_docs("gsm8k", data_dir=data_dir, source=source, split="train")
                metrics, records = evaluate_gsm8k_lm_eval(
                    docs, shots, generator, max_new_tokens=new_tokens,
                    num_fewshot=NUM_FEWSHOT if num_fewshot is None else num_fewshot)
            else:
                metrics, records = evaluate_ifeval(docs, generator, max_new_tokens=new_tokens)
        elif task in MULTIPLE_CHOICE:
            if scorer is None:
                scorer = LoglikScorer.from_pretrained(path, batch_size=batch_size, progress=True)
            metrics, records = evaluate_multiple_choice(task, docs, scorer)
        else:  # parse_tasks rejects these already
            raise ValueError(f"unknown eval task {task!r}")
        seconds = time.perf_counter() - start
        log.info("%s: %s (%.1f s)", task, ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()), seconds)
        results[task] = metrics
        if records_out is not None:
            records_out[task] = records
        if timings_out is not None:
            timings_out[task] = seconds
    return results


def format_results(results: dict[str, dict[str, float]]) -> str:
    """A plain table: one row per (task, metric)."""
    lines = [f"{'task':14s} {'metric':28s} {'value':>8s}", "-" * 52]
    for task, metrics in results.items():
        n = metrics.get("n")
        for key, value in metrics.items():
            if key in ("n", "num_fewshot"):
                continue
            lines.append(f"{task:14s} {key:28s} {value:8.4f}")
        shots = metrics.get("num_fewshot")
        extra = f", {int(shots)}-shot" if shots else ""
        lines.append(f"{task:14s} {'(n' + (f'={int(n)}' if n is not None else '') + extra + ')':28s}")
    return "\n".join(lines)


def write_results(out: str | Path, results: dict, meta: dict, records: dict[str, list[dict]] | None = None) -> None:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**meta, "results": results}, indent=2))
    for task, rows in (records or {}).items():
        with open(out.with_suffix(f".{task}.samples.jsonl"), "w") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
