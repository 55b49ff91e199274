"""OpenRLHF reward-function file: give this file's path to `--reward.remote_url` (formerly `--remote_rm_url`).

OpenRLHF imports the file and calls `reward_func(queries, prompts, labels, **kwargs)`, where `queries[i]` is the
prompt followed by the response, `prompts[i]` the prompt, and `labels[i]` the row's `--data.label_key` value
(`--label_key`). It may call from several threads at once (`asyncio.to_thread`), often one sample per call; this is
safe: scoring goes through the shared, thread-safe `rewards.scoring` worker pool.

Which verifier scores a sample:
- a label that is a JSON object with `"dataset"` and `"ground_truth"` keys, e.g.
  `{"dataset": "gsm8k", "ground_truth": "18"}` (dataset may be a list with ground_truth aligned, as in
  `score_batch`), names its own verifier;
- any other label is the ground truth itself, scored with the verifier named in $RLVR_REWARD_DATASET
  (e.g. `gsm8k`, `math`, `ifeval`, or `package.module:function`); without that variable such a label is an error.

Returns `{"rewards": Tensor[B], "scores": Tensor[B], "extra_logs": {...: Tensor[B]}}`:
`rewards` = $RLVR_REWARD_SCALE (default 1.0) × the verifier value (0 for failed calls), `scores` = the value
clipped to [0, 1] (OpenRLHF's dynamic filtering expects that range), `extra_logs` = per-sample `verified`,
`reward_error` and `reward_timeout` flags (OpenRLHF logs their means).
"""

from __future__ import annotations

import json
import os
from typing import Any

from rewards.scoring import score_batch

DATASET_ENV = "RLVR_REWARD_DATASET"
SCALE_ENV = "RLVR_REWARD_SCALE"


def response_from_query(query: str, prompt: str) -> str:
    """OpenRLHF's query is prompt + response: strip the prompt when it is a prefix, else score the whole query."""
    return query[len(prompt):] if prompt and query.startswith(prompt) else query


def parse_label(label: Any) -> tuple[Any, Any]:
    """(dataset, ground_truth) from a label; see the module docstring."""
    if isinstance(label, dict) and "dataset" in label and "ground_truth" in label:
        return label["dataset"], label["ground_truth"]
    if isinstance(label, str) and label.lstrip().startswith("{"):
        try:
            obj = json.loads(label)
        except json.JSONDecodeError:
            obj = None
        if isinstance(obj, dict) and "dataset" in obj and "ground_truth" in obj:
            return obj["dataset"], obj["ground_truth"]
    dataset = os.environ.get(DATASET_ENV)
    if not dataset:
        raise ValueError(f"label {str(label)[:80]!r} names no verifier: use a JSON label "
                         f'{{"dataset": ..., "ground_truth": ...}} or set ${DATASET_ENV}')
    return dataset, label


def reward_func(queries: list[str], prompts: list[str], labels: list[Any], **kwargs) -> dict[str, Any]:
    import torch  # only here: `rewards` stays importable without torch

    if not (len(queries) == len(prompts) == len(labels)):
        raise ValueError(f"reward_func: {len(queries)} queries, {len(prompts)} prompts, {len(labels)} labels")
    pairs = [parse_label(label) for label in labels]
    batch = score_batch([response_from_query(q, p) for q, p in zip(queries, prompts)],
                        [gt for _, gt in pairs], [ds for ds, _ in pairs], prompts=list(prompts))
    failed = {i: name for i, name, _ in batch.failures}
    timed_out = {i for i, _, reason in batch.failures if reason.startswith("timeout")}
    values = torch.tensor(batch.values, dtype=torch.float32)
    scale = float(os.environ.get(SCALE_ENV, "1.0"))
    return {
        "rewards": values * scale,
        "scores": values.clamp(0.0, 1.0),
        "extra_logs": {
            "verified": (values > 0).float(),
            "reward_error": torch.tensor([float(i in failed and i not in timed_out) for i in range(len(values))]),
            "reward_timeout": torch.tensor([float(i in timed_out) for i in range(len(values))]),
        },
    }
