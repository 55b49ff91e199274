"""Device selection: CUDA when present, else CPU — with the matching dist backend, dtypes and thread count."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Literal

import torch

DeviceKind = Literal["auto", "cpu", "cuda"]


@dataclass(frozen=True)
class DeviceInfo:
    kind: Literal["cpu", "cuda"]
    dist_backend: Literal["gloo", "nccl"]
    # The dtype the device trains in by default (engine.precision auto; core.engine.precision_for): bf16 on a
    # CUDA GPU with native bf16, else fp32 (master weights stay fp32: pure-bf16 weights barely learn with AdamW).
    param_dtype: str
    compute_dtype: str
    num_threads: int

    @property
    def torch_device(self) -> str:
        return self.kind


def detect_device(prefer: DeviceKind = "auto", num_threads: int | None = None) -> DeviceInfo:
    """Pick the device. `prefer="cuda"` on a machine without CUDA is an error, not a silent CPU fallback."""
    has_cuda = torch.cuda.is_available()
    if prefer == "cuda" and not has_cuda:
        raise RuntimeError("device 'cuda' requested but torch.cuda.is_available() is False")
    if prefer == "cuda" or (prefer == "auto" and has_cuda):
        # native bf16 only: torch reports emulated bf16 (pre-Ampere GPUs) as supported by default. Without it,
        # fp32: nothing here trains in fp16 (DeepSpeed's fp16 mode with loss scaling is not configured)
        dtype = "bfloat16" if torch.cuda.is_bf16_supported(including_emulation=False) else "float32"
        return DeviceInfo("cuda", "nccl", dtype, dtype, num_threads or default_threads())
    return DeviceInfo("cpu", "gloo", "float32", "float32", num_threads or default_threads())


def default_threads() -> int:
    """$OMP_NUM_THREADS if set, else all cores visible to this process."""
    env = os.environ.get("OMP_NUM_THREADS")
    if env and env.isdigit() and int(env) > 0:
        return int(env)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def set_threads(n: int) -> None:
    """Set torch's intra-op threads (and OMP for child processes) deliberately; cores are shared here."""
    os.environ["OMP_NUM_THREADS"] = str(n)
    torch.set_num_threads(n)


def torch_dtype(name: str):
    try:
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}; use float32, bfloat16 or float16") from None


def cpu_supports_bf16() -> bool:
    """True when this CPU computes bf16 natively (AVX-512 BF16 or AMX): then bf16 autocast runs matmuls about
    twice as fast as fp32 (ENVIRONMENT.md: 204 vs 90 GFLOP/s per thread here). Linux /proc/cpuinfo flags."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return False
    return any(flag in flags.split() for flag in ("avx512_bf16", "amx_bf16"))


def autocast_context(mode: str, device: DeviceInfo):
    """The mixed-precision context for forward passes on `device`. On CPU, `mode` "bf16" (or "auto" on a CPU
    with native bf16) runs matmuls in bf16 under `torch.autocast` while weights, gradients and optimiser state
    stay fp32; "off" (and every CUDA device, where DeepSpeed's bf16 config does the casting) is a no-op."""
    if mode not in ("auto", "bf16", "off"):
        raise ValueError(f"unknown autocast mode {mode!r}; use auto, bf16 or off")
    if device.kind == "cpu" and (mode == "bf16" or (mode == "auto" and cpu_supports_bf16())):
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def matmul_peak_flop_per_s(dtype: str = "float32", threads: int | None = None, n: int = 2048,
                           seconds: float = 1.0) -> float:
    """The CPU's (or GPU's) dense matmul rate: the best of repeated n x n `torch.matmul`s in `dtype` with
    `threads` torch threads, 2 n^3 FLOPs each, over about `seconds` after one warm-up. The ceiling a learner's
    FLOP/s is compared with (bench/rlvr_step.py)."""
    import time

    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        dt = torch_dtype(dtype)
        a, b = torch.randn(n, n).to(dt), torch.randn(n, n).to(dt)
        torch.matmul(a, b)
        best, spent = float("inf"), 0.0
        while spent < seconds:
            t0 = time.perf_counter()
            torch.matmul(a, b)
            dt_s = time.perf_counter() - t0
            best, spent = min(best, dt_s), spent + dt_s
        return 2.0 * n**3 / best
    finally:
        torch.set_num_threads(before)
