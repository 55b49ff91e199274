"""OpenRLHF reward-function file: give this file's path to `--reward.remote_url` (formerly `--remote_rm_url`).

OpenRLHF imports the file and calls `reward_func(queries, prompts, labels, **kwargs)`, where `queries[i]` is the
prompt followed by the response, decoded with `skip_special_tokens=False` (so it ends with the chat template's
end-of-turn token, e.g. `<|im_end|>`), `prompts[i]` the prompt, and `labels[i]` the row's `--data.label_key`
value (`--label_key`). It may call from several threads at once (`asyncio.to_thread`), often one sample per call;
this is safe: scoring goes through the shared, thread-safe `rewards.scoring` worker pool.

The response is the query without its prompt prefix and without the special tokens that end it (`END_TOKENS`,
plus any in $RLVR_STRIP_TOKENS, comma-separated; whitespace between them goes too, the response's own trailing
whitespace stays). Without that, `<|im_end|>` at the end of a correct answer fails IFEval's end phrase, quotation
and JSON checks.

Which verifier scores a sample: $RLVR_REWARD_DATASET (required):
- a verifier name (`gsm8k`, `math`, `ifeval`, or `package.module:function`): every label is the ground truth
  itself, except labels that are JSON objects with `"dataset"` and `"ground_truth"` keys, which name their own;
- `from_label`: every label must be such an object, e.g. `{"dataset": "gsm8k", "ground_truth": "18"}` (dataset
  may be a list with ground_truth aligned, as in `score_batch`).

Set-up checks: when OpenRLHF loads this file, a missing or unknown $RLVR_REWARD_DATASET, a bad $RLVR_REWARD_SCALE
or a bad scoring variable ($RLVR_REWARD_TIMEOUT_S, $RLVR_REWARD_WORKERS, $RLVR_VERIFIER_MEMORY_MB) raises, so the
run stops at start-up (OpenRLHF only logs per-call errors, at INFO level, and drops the reward).

Returns `{"rewards": Tensor[B], "scores": Tensor[B], "extra_logs": {...: Tensor[B]}}`:
`rewards` = $RLVR_REWARD_SCALE (default 1.0) × the verifier value (0 for failed calls), `scores` = the value
clipped to [0, 1] (OpenRLHF's dynamic filtering expects that range), `extra_logs` = per-sample `verified`,
`reward_error` and `reward_timeout` flags (OpenRLHF logs their means). Without torch (the light install alone)
the same dict holds lists; `score_queries` always returns lists.
"""

from __future__ import annotations

import json
import logging
import math
import os
from typing import Any

from rewards.scoring import check_environment, resolve_verifiers, score_batch

DATASET_ENV = "RLVR_REWARD_DATASET"
SCALE_ENV = "RLVR_REWARD_SCALE"
STRIP_ENV = "RLVR_STRIP_TOKENS"
FROM_LABEL = "from_label"
# end-of-turn / end-of-text / padding tokens of common chat templates (ChatML, Llama 2/3, Mistral, Gemma, Phi-3,
# DeepSeek), as they appear in text decoded with skip_special_tokens=False
END_TOKENS = ("<|im_end|>", "<|endoftext|>", "</s>", "<|eot_id|>", "<|end_of_text|>", "<|eom_id|>", "<end_of_turn>",
              "<eos>", "<|end|>", "<｜end▁of▁sentence｜>", "<pad>", "<|pad|>", "<|finetune_right_pad_id|>")

log = logging.getLogger(__name__)


def _read_environment() -> tuple[str, float, tuple[str, ...]]:
    """(dataset, scale, tokens to strip), validated: raises with the variable's name on a bad value."""
    check_environment()
    dataset = os.environ.get(DATASET_ENV, "").strip()
    if not dataset:
        raise RuntimeError(f"${DATASET_ENV} is not set: set it to the verifier for plain labels (e.g. gsm8k, math, "
                           f"ifeval, package.module:function), or to {FROM_LABEL!r} if every label is a JSON object "
                           '{"dataset": ..., "ground_truth": ...}')
    if dataset != FROM_LABEL:
        resolve_verifiers([dataset], load=True)  # unknown or broken: UnknownVerifierError now
    raw_scale = os.environ.get(SCALE_ENV, "1.0")
    try:
        scale = float(raw_scale)
    except ValueError:
        scale = math.nan
    if not math.isfinite(scale):
        raise ValueError(f"${SCALE_ENV}={raw_scale!r} is not a finite number")
    extra = tuple(t.strip() for t in os.environ.get(STRIP_ENV, "").split(",") if t.strip())
    return dataset, scale, END_TOKENS + extra


def strip_end_tokens(text: str, tokens: tuple[str, ...] = END_TOKENS) -> str:
    """`text` without the run of special tokens (and whitespace between them) at its end; text that does not end
    in one is returned unchanged, trailing whitespace included."""
    cut = end = len(text)
    while True:
        body = text[:end].rstrip()
        token = next((t for t in tokens if body.endswith(t)), None)
        if token is None:
            return text[:cut]
        end = cut = len(body) - len(token)


def response_from_query(query: str, prompt: str, tokens: tuple[str, ...] = END_TOKENS) -> str:
    """OpenRLHF's query is prompt + response + end-of-turn token(s): the response alone. When the prompt is not a
    prefix of the query (a tokenizer that does not round-trip), the whole query is used."""
    response = query[len(prompt):] if prompt and query.startswith(prompt) else query
    return strip_end_tokens(response, tokens)


def parse_label(label: Any, dataset: str | None = None) -> tuple[Any, Any]:
    """(dataset, ground_truth) from a label; see the module docstring. `dataset` defaults to the environment's."""
    dataset = DATASET if dataset is None else dataset
    if isinstance(label, dict) and "dataset" in label and "ground_truth" in label:
        return label["dataset"], label["ground_truth"]
    if isinstance(label, str) and label.lstrip().startswith("{"):
        try:
            obj = json.loads(label)
        except json.JSONDecodeError:
            obj = None
        if isinstance(obj, dict) and "dataset" in obj and "ground_truth" in obj:
            return obj["dataset"], obj["ground_truth"]
    if dataset == FROM_LABEL:
        message = (f"label {str(label)[:80]!r} is not a JSON object with 'dataset' and 'ground_truth', as "
                   f"${DATASET_ENV}={FROM_LABEL} requires")
        log.error(message)  # OpenRLHF logs the exception at INFO only
        raise ValueError(message)
    return dataset, label


def score_queries(queries: list[str], prompts: list[str], labels: list[Any]) -> dict[str, Any]:
    """The work of `reward_func`, as plain lists (no torch): {"rewards", "scores", "extra_logs": {...}}."""
    if not (len(queries) == len(prompts) == len(labels)):
        raise ValueError(f"reward_func: {len(queries)} queries, {len(prompts)} prompts, {len(labels)} labels")
    pairs = [parse_label(label) for label in labels]
    responses = [response_from_query(q, p, STRIP_TOKENS) for q, p in zip(queries, prompts)]
    batch = score_batch(responses, [gt for _, gt in pairs], [ds for ds, _ in pairs], prompts=list(prompts))
    failed = {i for i, _, _ in batch.failures}
    timed_out = {i for i, _, reason in batch.failures if reason.startswith("timeout")}
    n = len(batch.values)
    return {
        "rewards": [v * SCALE for v in batch.values],
        "scores": [min(max(v, 0.0), 1.0) for v in batch.values],
        "extra_logs": {
            "verified": [float(v > 0) for v in batch.values],
            "reward_error": [float(i in failed and i not in timed_out) for i in range(n)],
            "reward_timeout": [float(i in timed_out) for i in range(n)],
        },
    }


def reward_func(queries: list[str], prompts: list[str], labels: list[Any], **kwargs) -> dict[str, Any]:
    """OpenRLHF's entry point: `score_queries` as float32 tensors (plain lists where torch is not installed,
    which never happens under OpenRLHF)."""
    out = score_queries(queries, prompts, labels)
    try:
        import torch  # only here: `rewards` stays importable without torch
    except ModuleNotFoundError:
        return out

    def tensor(values):
        return torch.tensor(values, dtype=torch.float32)

    return {"rewards": tensor(out["rewards"]), "scores": tensor(out["scores"]),
            "extra_logs": {k: tensor(v) for k, v in out["extra_logs"].items()}}


# ---- set-up checks, when OpenRLHF loads this file ----
DATASET, SCALE, STRIP_TOKENS = _read_environment()
