"""Where this process runs: pid, node address and id, the GPUs Ray gave it; files as this node sees them. Ray is
optional here: the learner and the generator also run as plain objects without Ray (tests, world size 1), and then
this is the local machine."""

from __future__ import annotations

import os
import sys
from typing import Any


def whereami() -> dict[str, Any]:
    """This process's pid, node address and id, and the GPU ids Ray assigned it (run inside an actor)."""
    ray = sys.modules.get("ray")  # only when this process uses Ray: importing it here would cost seconds
    if ray is None or not ray.is_initialized():
        return {"pid": os.getpid(), "node_ip": "127.0.0.1", "node_id": None, "gpu_ids": []}
    ctx = ray.get_runtime_context()
    gpus = ctx.get_accelerator_ids().get("GPU", [])
    return {"pid": os.getpid(), "node_ip": ray.util.get_node_ip_address(), "node_id": ctx.get_node_id(),
            "gpu_ids": [str(g) for g in gpus]}


def read_text(path: str) -> str | None:
    """The file's text as this process's node sees it (None when absent)."""
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return None


def list_files(path: str) -> list[tuple[str, int]]:
    """(relative path, size) of every file under `path` as this process's node sees it, sorted."""
    root = os.path.abspath(path)
    out = []
    for folder, _, names in os.walk(root):
        for name in names:
            full = os.path.join(folder, name)
            out.append((os.path.relpath(full, root), os.path.getsize(full)))
    return sorted(out)
