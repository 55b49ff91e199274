"""The learner's step alone, on the shapes of the IFEval recipe: one GRPO prepare + update of a plain
`rlvr.actors.learner.Learner` (no Ray) on SmolLM2-135M, 8 prompts x 4 samples, prompts of 60-200 tokens and
responses of 20-256 (mean ~140: run B's), generator and reference log-probs given (asynchronous rollouts with the
reference on the generators, as configs/rlvr/smollm2_ifeval.yaml), the recipe's engine settings (1 thread, bf16
autocast where the CPU has it). Random token ids drawn from a seeded RNG: the same batches every time.

    python bench/learner_step.py                        # this checkout
    python bench/learner_step.py --baseline ../base     # and another checkout of the repository, side by side

With --baseline, the two checkouts run one after another in fresh subprocesses, alternating --rounds times, and
the ratio of their median step times is printed. Per step: wall seconds, user and system CPU seconds, the
learner's useful GFLOP/s (rlvr.actors.perf) and its share of the matmul peak at the learner's precision, peak
RSS. Run it on an idle machine (the load average is printed).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIG = "configs/rlvr/smollm2_ifeval.yaml"


def worker(steps: int, seed: int) -> None:
    """Runs inside the checkout on sys.path[0]; prints one JSON line per step."""
    import torch

    from core.config import config_to_dict, load_config
    from core.device import cpu_supports_bf16, matmul_peak_flop_per_s
    from core.engine import free_port
    from core.models import resolve_model
    from rlvr.actors.learner import Learner
    from rlvr.config import RLVRConfig

    out = Path(os.environ.get("TMPDIR", "/tmp")) / f"learner-step-bench-{os.getpid()}"
    cfg = load_config(RLVRConfig, Path.cwd() / CONFIG, [f"output_dir={out}",
                                                        f"model={resolve_model('smollm2-135m-instruct')}"])
    learner = Learner(config_to_dict(cfg), 0, 1, "127.0.0.1", free_port())
    bf16 = cpu_supports_bf16() and cfg.engine.cpu_autocast != "off"
    peak = matmul_peak_flop_per_s("bfloat16" if bf16 else "float32", 1)
    rng = random.Random(seed)
    vocab = 49152
    for step in range(1, steps + 1):
        samples = []
        for _ in range(cfg.rollout.prompts_per_step):
            prompt = [rng.randrange(vocab) for _ in range(rng.randint(60, 200))]
            for _ in range(cfg.rollout.samples_per_prompt):
                n = min(cfg.rollout.max_new_tokens, max(20, int(rng.expovariate(1 / 140))))
                samples.append({"prompt_ids": prompt, "response_ids": [rng.randrange(vocab) for _ in range(n)],
                                "logprobs": [-1.0] * n, "ref_logprobs": [-1.0] * n})
        r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        prepared = learner.prepare(samples)
        advantages = torch.randn(prepared["mask"].shape, generator=torch.Generator().manual_seed(step))
        metrics = learner.update(step, advantages * prepared["mask"])
        wall, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
        rate = metrics["sum/flops"] / metrics["sum/learner_compute_s"]
        print(json.dumps({"step": step, "wall_s": wall, "user_s": r1.ru_utime - r0.ru_utime,
                          "sys_s": r1.ru_stime - r0.ru_stime, "gflop_per_s": rate / 1e9,
                          "peak_share": rate / peak, "peak": "bf16" if bf16 else "fp32",
                          "tokens": sum(len(s["prompt_ids"]) + len(s["response_ids"]) for s in samples),
                          "rss_gib": metrics["memory/learner_peak_rss_gib"]}), flush=True)


def run_checkout(path: Path, steps: int, seed: int) -> list[dict]:
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", DS_ACCELERATOR="cpu",
               PYTHONPATH=str(path))
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", "--steps", str(steps),
                           "--seed", str(seed)], cwd=path, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"the learner bench failed in {path}:\n{proc.stderr[-3000:]}")
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--baseline", type=Path, help="another checkout of this repository to compare with")
    p.add_argument("--steps", type=int, default=4, help="steps per run; the first is left out (warm-up)")
    p.add_argument("--rounds", type=int, default=1, help="runs per checkout (alternating with --baseline)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args.steps, args.seed)
        return 0
    print(f"load average before: {os.getloadavg()[0]:.2f}; CPU bf16: "
          f"{'avx512_bf16' in Path('/proc/cpuinfo').read_text()}", flush=True)
    checkouts = {"this": REPO} | ({"baseline": args.baseline.resolve()} if args.baseline else {})
    steps: dict[str, list[dict]] = {name: [] for name in checkouts}
    for _ in range(args.rounds):
        for name, path in checkouts.items():
            rows = run_checkout(path, args.steps, args.seed)[1:]
            steps[name] += rows
            for r in rows:
                print(f"{name:<9} step {r['step']}: {r['wall_s']:6.1f} s (user {r['user_s']:5.1f}, sys "
                      f"{r['sys_s']:5.1f}), {r['tokens']} tokens, {r['gflop_per_s']:6.1f} GFLOP/s = "
                      f"{100 * r['peak_share']:4.1f}% of the {r['peak']} peak, peak RSS {r['rss_gib']:.2f} GiB",
                      flush=True)
    medians = {name: statistics.median(r["wall_s"] for r in rows) for name, rows in steps.items()}
    for name, m in medians.items():
        print(f"{name}: median step {m:.1f} s over {len(steps[name])} steps")
    if args.baseline:
        print(f"baseline / this: {medians['baseline'] / medians['this']:.2f}x faster")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
