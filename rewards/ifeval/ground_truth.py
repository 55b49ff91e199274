"""IFEval ground truths in every accepted format, normalised: Google instruction blocks and Tulu 3 constraints
(see rewards.ifeval for the formats)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import rewards.ifeval.tulu as tulu


@dataclass(frozen=True)
class GoogleInstructions:
    instruction_ids: list[str]
    kwargs: list[dict[str, Any] | None]


def parse_ground_truth(ground_truth: Any) -> list[GoogleInstructions | dict[str, Any]]:
    """Normalise a ground truth to a list of Google instruction blocks and Tulu constraint dicts."""
    if isinstance(ground_truth, str):
        try:
            ground_truth = json.loads(ground_truth)
        except json.JSONDecodeError as err:
            raise ValueError(f"IFEval ground truth is not JSON: {ground_truth[:200]!r} ({err})") from None
    if isinstance(ground_truth, list):
        if not ground_truth:
            raise ValueError("IFEval ground truth is an empty list")
        return [unit for item in ground_truth for unit in parse_ground_truth(item)]
    if not isinstance(ground_truth, dict):
        raise ValueError(f"IFEval ground truth must be a dict, list or JSON string, got {type(ground_truth).__name__}")
    if "func_name" in ground_truth:
        return [tulu.parse_constraint(ground_truth)]
    ids = ground_truth.get("instruction_id_list", ground_truth.get("instruction_id"))
    if ids is None:
        raise ValueError(f"IFEval ground truth needs 'instruction_id_list' + 'kwargs' or 'func_name': {ground_truth!r:.200}")
    if isinstance(ids, str):
        ids = [ids]
    kwargs = ground_truth.get("kwargs")
    if isinstance(kwargs, dict):
        kwargs = [kwargs]
    if kwargs is None:
        kwargs = [None] * len(ids)
    if len(kwargs) != len(ids):
        raise ValueError(f"IFEval ground truth has {len(ids)} instruction ids but {len(kwargs)} kwargs")
    if not ids:
        raise ValueError("IFEval ground truth has no instructions")
    return [GoogleInstructions(list(ids), list(kwargs))]
