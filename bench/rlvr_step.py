"""RLVR step throughput: our trainer (Ray + vLLM/HF generators + DeepSpeed learners) beside TRL's GRPOTrainer, on
the same model, prompts and lengths. Goal (issue 14): >= 3x TRL's best end-to-end tokens/s on SmolLM2-135M, >= 2x
on the tiny model, and a learner at >= 50% of the CPU's matmul peak.

    python bench/rlvr_step.py                               # tiny model and SmolLM2-135M: every row
    python bench/rlvr_step.py --models tiny --steps 3       # quicker
    python bench/rlvr_step.py --frameworks ours --algorithm ppo

Rows (`--frameworks`):
- ours: the synchronous loop (rollout.async_steps 0): generate, score, learn, sync, one after another;
- ours-async: rollout.async_steps 1: the generator produces step t+1's batch while the learner trains on step t
  (one-step-stale rollouts, importance ratio against the generator's log-probs); one thread each, so on a 2-core
  machine they run on separate cores;
- ours-async-ref: the same with ppo.reference_on_generators: the generator also scores its batch under the frozen
  reference policy right after generating it, so that pass runs on the generator's core during the learner's
  update instead of on the learner's (rlvr.actors.scoring);
- trl: TRL's GRPOTrainer in fp32; trl-bf16: the same with `bf16=True` (torch.autocast bf16 around its forwards,
  fp32 weights), run only where the CPU computes bf16 natively (AVX-512 BF16/AMX): elsewhere torch's bf16 matmul
  is hundreds of times slower than fp32 (the peak line shows it) and the row is skipped, saying so. TRL runs in
  one process, so each TRL row runs at every thread count of `--trl-threads` (default: `--threads` and twice
  that).
Equal cores: our rows use two busy processes (a generator and a learner) of `--threads` threads each, so each of
our rows is compared with the fastest TRL row at the same total core count (2 x --threads); the TRL rows at fewer
threads stay in the table for information. TRL's vLLM modes are not rows: on this CPU-only install its colocate
mode needs a CUDA device and its server mode a separate vLLM server process (more cores again).
Ours uses engine.cpu_autocast=auto (bf16 matmuls where native, else fp32) and generation.backend=auto (the
faster of vLLM and HF on this machine, rlvr.actors.backend_probe, cached).

What is measured, per row and model, over the steps after `--warmup` (warm-up steps include compilation, engine
start and first-call costs, and are left out):
- tokens/s end to end: (prompt + response tokens of the step's rollouts) / wall time of the step; response tok/s
  counts generated tokens only. Both use each framework's own token counts.
- phases: generation, scoring, learner (log-probs, values, advantages, updates), weight sync. Ours come from the
  driver's per-step timings in metrics.jsonl (asynchronous: generation is only the time the step waited for its
  batch). TRL's: wall time of `GRPOTrainer._generate` (generation) and `_calculate_rewards` (scoring) measured by
  wrapping them; learner = step - generation - scoring (TRL generates with the policy itself, so it has no sync).
- ours' learner GFLOP/s (useful FLOPs / compute seconds in the learner, rlvr.actors.perf) and its share of the
  matmul peak measured here first (`torch.matmul` 2048^2, fp32 and bf16, `--threads` threads);
- peak resident memory: ours per actor (learner, generator, driver), TRL's one process.
Both run GRPO by default (TRL has no critic), same group size, prompts per step, max new tokens, temperature 1.0,
beta 0.05, one update per rollout batch, same seed, same verifier (our `gsm8k` via rewards.adapters.trl).

Each (row, model) runs in its own subprocess of this one, one after another, so they never compete for the CPU
and each starts cold. While each runs, the CPU time of processes outside this benchmark is sampled from /proc; a
run during which other processes used more than 10% of a core, or a 1-minute load average of 0.5 or more before
the benchmark started, is flagged: the machine was not idle and the figures are upper bounds. TRL is in the dev
extra (`pip install -e .[dev]`); without it the TRL rows are skipped with a hint.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

MODELS = {"tiny": "tiny-random", "smollm2": "smollm2-135m-instruct"}
FRAMEWORKS = ("ours", "ours-async", "ours-async-ref", "trl", "trl-bf16")
PHASES = ("generation", "scoring", "learner", "sync")
TRL_HINT = "pip install -e .[dev]  (or: pip install --no-deps trl==1.16.0)"
BASE_CONFIG = REPO / "configs" / "rlvr" / "tiny_ppo.yaml"
IDLE_LOAD = 0.5  # 1-minute load average below which the machine counts as idle
FOREIGN_CPU_LIMIT = 0.10  # cores used by other processes during a run above which it is flagged


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="tiny,smollm2", help=f"comma list of {', '.join(MODELS)} or model paths")
    p.add_argument("--frameworks", default=",".join(FRAMEWORKS), help=f"comma list of {', '.join(FRAMEWORKS)}")
    p.add_argument("--algorithm", default="grpo", choices=["grpo", "ppo", "rloo"], help="ours (TRL: always GRPO)")
    p.add_argument("--steps", type=int, default=4, help="RL steps per run, warm-up included")
    p.add_argument("--warmup", type=int, default=1, help="leading steps left out of the figures")
    p.add_argument("--prompts-per-step", type=int, default=4)
    p.add_argument("--group-size", type=int, default=4, help="responses per prompt")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--micro-batch", type=int, default=4,
                   help="sequences per forward/backward (both; the update is still one step per rollout batch)")
    p.add_argument("--max-prompt-tokens", type=int, default=512)
    p.add_argument("--data", default="procedural:gsm8k?n=256&seed=0", help="prompt source (load_prompts form)")
    p.add_argument("--backend", default="auto", choices=["vllm", "hf", "auto"], help="our generation backend")
    p.add_argument("--autocast", default="auto", choices=["auto", "bf16", "off"], help="our engine.cpu_autocast")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads per process of ours")
    p.add_argument("--trl-threads", default=None, help="comma list of TRL's thread counts (default: --threads and "
                   "2 x --threads: the cores our two processes use together)")
    p.add_argument("--out", default=None, help="folder for runs and results.json (default: a temp folder)")
    p.add_argument("--timeout", type=int, default=3600, help="seconds per run")
    p.add_argument("--worker", choices=FRAMEWORKS, help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if (args.prompts_per_step * args.group_size) % args.micro_batch:
        p.error("--micro-batch must divide prompts-per-step x group-size")
    if args.steps <= args.warmup:
        p.error(f"--steps ({args.steps}) must exceed --warmup ({args.warmup})")
    args.trl_threads = [int(t) for t in (args.trl_threads or f"{args.threads},{2 * args.threads}").split(",")]
    unknown = [f for f in args.frameworks.split(",") if f.strip() and f.strip() not in FRAMEWORKS]
    if unknown:
        p.error(f"unknown --frameworks {unknown}; use {', '.join(FRAMEWORKS)}")
    return args


# ---------------------------------------------------------------------------------------------------------------
# Summaries shared by the workers: per-step records -> figures.

def summarise(steps: list[dict], warmup: int) -> dict:
    """`steps`: one dict per step with step_s, tokens, response_tokens and the PHASES in seconds."""
    kept = steps[warmup:]
    if not kept:
        raise RuntimeError(f"no steps left after {warmup} warm-up steps (got {len(steps)})")
    wall = sum(s["step_s"] for s in kept)
    out = {"steps": len(kept), "step_s": wall / len(kept),
           "tokens_per_s": sum(s["tokens"] for s in kept) / wall,
           "response_tokens_per_s": sum(s["response_tokens"] for s in kept) / wall,
           "mean_response_len": statistics.mean(s["response_tokens"] for s in kept) / max(1, kept[0]["batch"])}
    for ph in PHASES:
        out[f"{ph}_s"] = sum(s.get(ph, 0.0) for s in kept) / len(kept)
    for key in ("learner_flop_per_s", "staleness"):
        if all(key in s for s in kept):
            out[key] = statistics.mean(s[key] for s in kept)
    return out


# ---------------------------------------------------------------------------------------------------------------
# Our trainer: the driver, then its metrics.jsonl.

PHASE_KEYS = {"generation": "time/generation_s", "scoring": "time/scoring_s", "learner": "time/learner_s",
              "sync": "time/sync_s"}  # the driver's per-step timings (rlvr/trainer.py)
MEMORY_KEYS = ("memory/learner_peak_rss_gib", "memory/generator_peak_rss_gib", "memory/driver_peak_rss_gib")


def our_step_records(metrics: list[dict], batch: int, prompt_tokens: dict[str, int], group_size: int) -> list[dict]:
    """Per-step records from our metrics.jsonl. Response tokens: the logged mean length x batch; prompt tokens:
    the step's prompt ids (logged) x their chat-template lengths x group size."""
    records = []
    for row in metrics:
        if "time/step_s" not in row:
            continue
        rec = {"step_s": row["time/step_s"], "batch": batch}
        for ph, key in PHASE_KEYS.items():
            rec[ph] = float(row.get(key, 0.0))
        rec["response_tokens"] = row["response/length_mean"] * batch
        rec["tokens"] = rec["response_tokens"] + group_size * sum(prompt_tokens[i] for i in row["prompt_ids"])
        if "perf/learner_flop_per_s" in row:
            rec["learner_flop_per_s"] = row["perf/learner_flop_per_s"]
        rec["staleness"] = row.get("rollout/staleness", 0.0)
        records.append(rec)
    return records


def run_ours(args) -> dict:
    from transformers import AutoTokenizer

    from core.config import load_config
    from core.metrics import read_metrics
    from core.models import resolve_model
    from rlvr.config import RLVRConfig
    from rlvr.data.prompts import load_prompts
    from rlvr.driver import train

    out_dir = Path(args.result).with_suffix("")
    batch = args.prompts_per_step * args.group_size
    async_steps = 1 if args.worker.startswith("ours-async") else 0
    reference_on_generators = args.worker == "ours-async-ref"
    overrides = [
        f"model={args.model}", f"output_dir={out_dir}", f"seed={args.seed}", f"algorithm={args.algorithm}",
        f"data.train=[{json.dumps(args.data)}]", "data.eval=[]", f"data.max_prompt_tokens={args.max_prompt_tokens}",
        "data.max_dropped_fraction=1.0", f"generation.backend={args.backend}",
        f"rollout.prompts_per_step={args.prompts_per_step}", f"rollout.samples_per_prompt={args.group_size}",
        f"rollout.max_new_tokens={args.max_new_tokens}", "rollout.temperature=1.0",
        f"rollout.async_steps={async_steps}", "ppo.epochs=1", "ppo.num_mini_batches=1", "ppo.kl_coef=0.05",
        f"optim.per_device_batch_size={args.micro_batch}", "optim.lr=1e-6",
        f"train.total_steps={args.steps}", f"checkpoints.save_every={args.steps + 1}", "train.eval_every=0",
        "checkpoints.resume=never", "train.progress=false", "weight_sync.verify=false", "logging.tensorboard=false",
        f"engine.num_threads={args.threads}", f"generation.threads={args.threads}",
        f"engine.cpu_autocast={args.autocast}", f"ppo.reference_on_generators={reference_on_generators}",
    ]
    cfg = load_config(RLVRConfig, BASE_CONFIG, overrides)
    t0 = time.perf_counter()
    train(cfg)
    total = time.perf_counter() - t0
    tok = AutoTokenizer.from_pretrained(resolve_model(args.model))
    lengths = {r.id: r.prompt_tokens for r in load_prompts([args.data], tokenizer=tok, max_dropped_fraction=1.0)}
    metrics = read_metrics(out_dir)
    records = our_step_records(metrics, batch, lengths, args.group_size)
    name = "ours (async 1, ref gen)" if reference_on_generators else "ours (async 1)" if async_steps else "ours"
    result = {"framework": f"{name} {args.algorithm}", "run_s": total, **summarise(records, args.warmup)}
    for key in MEMORY_KEYS:
        values = [row[key] for row in metrics if key in row]
        if values:
            result[key.split("/")[1].removesuffix("_peak_rss_gib") + "_rss_gib"] = max(values)
    actors = json.loads((out_dir / "actors.json").read_text())
    result["generator"] = "/".join(str(actors["generators"][0].get(k, "?")) for k in ("backend", "dtype"))
    return result


# ---------------------------------------------------------------------------------------------------------------
# TRL's GRPOTrainer on the same prompts.

def run_trl(args) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from core.models import resolve_model
    from rewards.adapters.trl import make_reward_func
    from rlvr.actors.perf import peak_rss_gib
    from rlvr.data.prompts import load_prompts

    torch.manual_seed(args.seed)
    path = resolve_model(args.model)
    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    prompts = load_prompts([args.data], tokenizer=tok, max_prompt_tokens=args.max_prompt_tokens,
                           max_dropped_fraction=1.0)
    ds = Dataset.from_list([{"prompt": r.messages, "ground_truth": r.ground_truth, "dataset": r.dataset}
                            for r in prompts])
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    batch = args.prompts_per_step * args.group_size
    out_dir = Path(args.result).with_suffix("")
    bf16 = args.worker == "trl-bf16"
    config = GRPOConfig(
        # one generation of `batch` completions per optimiser step, accumulated over micro-batches, as ours
        output_dir=str(out_dir), per_device_train_batch_size=args.micro_batch,
        gradient_accumulation_steps=batch // args.micro_batch,
        num_generations=args.group_size, max_completion_length=args.max_new_tokens, temperature=1.0,
        beta=0.05, learning_rate=1e-6, num_iterations=1, max_steps=args.steps, logging_steps=1,
        save_strategy="no", report_to=[], use_cpu=True, bf16=bf16, seed=args.seed, data_seed=args.seed,
        dataloader_num_workers=0, disable_tqdm=True, use_vllm=False,
    )
    trainer = GRPOTrainer(model=model, args=config, train_dataset=ds, processing_class=tok,
                          reward_funcs=[make_reward_func()])

    phase_time = {"generation": 0.0, "scoring": 0.0}

    def timed(name, fn):
        def wrapper(*a, **kw):
            t = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                phase_time[name] += time.perf_counter() - t
        return wrapper

    trainer._generate = timed("generation", trainer._generate)
    trainer._calculate_rewards = timed("scoring", trainer._calculate_rewards)

    steps: list[dict] = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, *a, **kw):
            phase_time.update(generation=0.0, scoring=0.0)
            self.t = time.perf_counter()

        def on_step_end(self, *a, **kw):
            dt = time.perf_counter() - self.t
            steps.append({"step_s": dt, "generation": phase_time["generation"], "scoring": phase_time["scoring"],
                          "learner": dt - phase_time["generation"] - phase_time["scoring"], "sync": 0.0,
                          "batch": batch})

    trainer.add_callback(StepTimer())
    t0 = time.perf_counter()
    trainer.train()
    total = time.perf_counter() - t0
    logs = [h for h in trainer.state.log_history if "completions/mean_length" in h]
    if len(logs) != len(steps):
        raise RuntimeError(f"TRL logged {len(logs)} steps with token counts, timed {len(steps)}")
    seen = 0.0
    for rec, h in zip(steps, logs):
        rec["response_tokens"] = h["completions/mean_length"] * batch
        rec["tokens"] = h["num_tokens"] - seen  # TRL's running count of prompt + completion tokens
        seen = h["num_tokens"]
    return {"framework": f"TRL GRPOTrainer {'bf16' if bf16 else 'fp32'}", "run_s": total,
            **summarise(steps, args.warmup), "process_rss_gib": peak_rss_gib()}


# ---------------------------------------------------------------------------------------------------------------
# Is the machine idle? CPU time used by processes outside this benchmark's process tree, sampled from /proc.

def _proc_stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds) of a process, None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class ForeignCPU:
    """Samples every `period_s` the CPU seconds of every process not descended from this one; `seconds` is their
    growth over the sampling window (processes first seen mid-run count from when they were first seen)."""

    def __init__(self, period_s: float = 1.0):
        self.period_s, self.seconds = period_s, 0.0
        self._last: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _sample(self) -> None:
        stats = {}
        for name in os.listdir("/proc"):
            if name.isdigit():
                st = _proc_stat(int(name))
                if st is not None:
                    stats[int(name)] = st
        mine, changed = {os.getpid()}, True
        while changed:  # descendants of this process
            changed = False
            for pid, (ppid, _) in stats.items():
                if ppid in mine and pid not in mine:
                    mine.add(pid)
                    changed = True
        for pid, (_, cpu) in stats.items():
            if pid not in mine:
                if pid in self._last:
                    self.seconds += max(0.0, cpu - self._last[pid])
                self._last[pid] = cpu

    def _loop(self) -> None:
        while not self._stop.wait(self.period_s):
            self._sample()

    def __enter__(self):
        if os.path.isdir("/proc"):
            self._sample()
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
            self._sample()


def matmul_peaks(threads: int) -> dict[str, float]:
    """fp32 and bf16 matmul FLOP/s at `threads` threads (core.device.matmul_peak_flop_per_s). Without native bf16
    a single 2048^2 bf16 matmul takes about a minute here, so bf16 is measured on 256^2 there (still the rate a
    learner would get)."""
    from core.device import cpu_supports_bf16, matmul_peak_flop_per_s

    bf16_n = 2048 if cpu_supports_bf16() else 256
    return {"float32": matmul_peak_flop_per_s("float32", threads),
            "bfloat16": matmul_peak_flop_per_s("bfloat16", threads, n=bf16_n, seconds=0.5)}


# ---------------------------------------------------------------------------------------------------------------
# The parent: one subprocess per (model, framework), then a table.

def worker_main(args) -> int:
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)
    result = run_trl(args) if args.worker.startswith("trl") else run_ours(args)
    result["model"] = args.model
    # the cores the row's busy processes use together: ours a generator and a learner, TRL one process
    result["cores"] = args.threads * (1 if args.worker.startswith("trl") else 2)
    result["threads"] = args.threads
    Path(args.result).write_text(json.dumps(result, indent=1))
    return 0


def _child_argv(args, framework: str, model: str, result: Path, threads: int) -> list[str]:
    keep = ["--algorithm", args.algorithm, "--steps", str(args.steps), "--warmup", str(args.warmup),
            "--prompts-per-step", str(args.prompts_per_step), "--group-size", str(args.group_size),
            "--max-new-tokens", str(args.max_new_tokens), "--micro-batch", str(args.micro_batch),
            "--max-prompt-tokens", str(args.max_prompt_tokens), "--autocast", args.autocast,
            "--data", args.data, "--seed", str(args.seed), "--backend", args.backend, "--threads", str(threads)]
    return [sys.executable, str(Path(__file__).resolve()), "--worker", framework, "--model", model,
            "--result", str(result), *keep]


def _fmt(r: dict, peaks: dict[str, float]) -> str:
    phases = " ".join(f"{r[f'{ph}_s']:7.2f}" for ph in PHASES)
    flops = r.get("learner_flop_per_s")
    peak = peaks["bfloat16"] if peaks.get("native_bf16") else peaks["float32"]
    rate = f"{flops / 1e9:6.1f} {100 * flops / peak:4.0f}%" if flops else f"{'-':>6} {'-':>5}"
    rss = (f"{r.get('learner_rss_gib', 0):.2f}/{r.get('generator_rss_gib', 0):.2f}/{r.get('driver_rss_gib', 0):.2f}"
           if "learner_rss_gib" in r else f"{r.get('process_rss_gib', 0):.2f}")
    flag = " *" if r.get("foreign_cores", 0) > FOREIGN_CPU_LIMIT else ""
    name = f"{r['framework']} [{r.get('cores', '?')}c]"
    return (f"{name:<34} {r['step_s']:7.2f} {phases} {r['tokens_per_s']:8.1f} "
            f"{r['response_tokens_per_s']:8.1f} {r['mean_response_len']:6.1f} {rate} {rss:>15} "
            f"{r.get('foreign_cores', 0):5.2f}{flag}")


def report(results: list[dict], peaks: dict[str, float], args) -> list[str]:
    """The table ([Nc]: the cores the row's processes use together) and, per model, each of our rows against
    the fastest TRL row at the same number of cores."""
    peak_name = "%bf16" if peaks.get("native_bf16") else "%fp32"
    lines = [f"{'framework [cores]':<34} {'step_s':>7} " + " ".join(f"{ph[:7]:>7}" for ph in PHASES)
             + f" {'tok/s':>8} {'resp/s':>8} {'resp_n':>6} {'GFLOP/s':>6} {peak_name:>5} {'peak RSS GiB':>15} "
             f"{'other':>5}"]
    for model in dict.fromkeys(r["model"] for r in results):
        rows = [r for r in results if r["model"] == model]
        lines.append(f"-- {model}")
        lines += [_fmt(r, peaks) for r in rows]
        trl = [r for r in rows if r["framework"].startswith("TRL")]
        goal = 3.0 if "smollm2" in model.lower() or "135m" in model.lower() else 2.0
        for ours in (r for r in rows if r["framework"].startswith("ours")):
            same = [r for r in trl if r.get("cores") == ours.get("cores")]
            best = max(same, key=lambda r: r["tokens_per_s"]) if same else None
            if best:
                ratio = ours["tokens_per_s"] / best["tokens_per_s"]
                lines.append(f"   {ours['framework']} / {best['framework']}, both on {ours['cores']} cores: "
                             f"end-to-end tokens/s {ratio:.2f}x (goal >= {goal:g}x: "
                             f"{'met' if ratio >= goal else 'not met'}); response tokens/s "
                             f"{ours['response_tokens_per_s'] / best['response_tokens_per_s']:.2f}x")
            elif trl:
                lines.append(f"   {ours['framework']}: no TRL row on {ours.get('cores')} cores (--trl-threads)")
            if ours.get("learner_flop_per_s"):
                f = ours["learner_flop_per_s"]
                lines.append(f"   {ours['framework']} learner: {f / 1e9:.1f} GFLOP/s = "
                             f"{100 * f / peaks['float32']:.0f}% of the fp32 and {100 * f / peaks['bfloat16']:.0f}% "
                             f"of the bf16 matmul peak ({args.threads} thread(s) per process); generator "
                             f"{ours.get('generator', '?')}, staleness {ours.get('staleness', 0):.1f}")
    return lines


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        return worker_main(args)
    from core.device import cpu_supports_bf16

    load_before = os.getloadavg()
    frameworks = [f.strip() for f in args.frameworks.split(",") if f.strip()]
    skipped = []
    if any(f.startswith("trl") for f in frameworks) and importlib.util.find_spec("trl") is None:
        skipped.append(f"TRL rows: TRL is not installed ({TRL_HINT})")
        frameworks = [f for f in frameworks if not f.startswith("trl")]
    if "trl-bf16" in frameworks and not cpu_supports_bf16():
        skipped.append("trl-bf16: this CPU has no native bf16 (no avx512_bf16/amx_bf16 in /proc/cpuinfo); torch's "
                       "bf16 matmul runs at the bf16 peak below, so TRL's fp32 row is its best setting here")
        frameworks.remove("trl-bf16")
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="rlvr-bench-"))
    out.mkdir(parents=True, exist_ok=True)
    peaks = matmul_peaks(args.threads)
    peaks["native_bf16"] = cpu_supports_bf16()
    print(f"matmul peak, {args.threads} thread(s): fp32 {peaks['float32'] / 1e9:.1f} GFLOP/s, bf16 "
          f"{peaks['bfloat16'] / 1e9:.1f} GFLOP/s (native bf16: {cpu_supports_bf16()})", flush=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), TOKENIZERS_PARALLELISM="false",
               RAY_AUTH_MODE=os.environ.get("RAY_AUTH_MODE", "disabled"), PYTHONPATH=str(REPO))
    env.pop("RAY_ADDRESS", None)  # ours starts its own local Ray, like `rlvr train` without a cluster
    results, failures = [], []
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        model = MODELS.get(name, name)
        jobs = [(fw, t) for fw in frameworks for t in (args.trl_threads if fw.startswith("trl") else [args.threads])]
        for fw, threads in jobs:
            result_path = out / f"{name.replace('/', '_')}-{fw}-t{threads}.json"
            log_path = result_path.with_suffix(".log")
            print(f"running {fw} on {model} with {threads} thread(s) ({args.steps} steps; load average "
                  f"{os.getloadavg()[0]:.2f}) ... log: {log_path}", flush=True)
            t0 = time.perf_counter()
            with open(log_path, "w") as log, ForeignCPU() as foreign:
                proc = subprocess.run(_child_argv(args, fw, model, result_path, threads), stdout=log,
                                      stderr=subprocess.STDOUT, env=dict(env, OMP_NUM_THREADS=str(threads)),
                                      timeout=args.timeout, cwd=REPO)
            wall = time.perf_counter() - t0
            if proc.returncode != 0 or not result_path.is_file():
                tail = log_path.read_text(errors="replace")[-2000:]
                failures.append(f"{fw} on {model}: exit {proc.returncode}\n{tail}")
                print(f"  FAILED (exit {proc.returncode}); last lines of {log_path}:\n{tail}", flush=True)
                continue
            result = json.loads(result_path.read_text())
            result["foreign_cores"] = foreign.seconds / wall
            results.append(result)
            print(f"  done in {wall:.0f} s; other processes used {foreign.seconds:.1f} CPU s "
                  f"({result['foreign_cores']:.2f} cores)", flush=True)

    print(f"\nsettings: {args.prompts_per_step} prompts x {args.group_size} samples per step, max_new_tokens "
          f"{args.max_new_tokens}, {args.steps} steps ({args.warmup} warm-up left out), data {args.data}, "
          f"ours {args.threads} thread(s)/process, TRL {args.trl_threads} thread(s), host CPUs {os.cpu_count()}; load average before: "
          f"{load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}")
    for line in skipped:
        print(f"skipped {line}")
    print("phases in seconds per step; peak RSS: learner/generator/driver (ours) or the one process (TRL); "
          "other: cores used by processes outside the benchmark during the run\n")
    for line in report(results, peaks, args):
        print(line)
    busy = [r for r in results if r["foreign_cores"] > FOREIGN_CPU_LIMIT]
    if load_before[0] >= IDLE_LOAD or busy:
        print(f"\nWARNING: the machine was not idle (load average {load_before[0]:.2f} before the start"
              + (f"; other processes used > {FOREIGN_CPU_LIMIT:.0%} of a core during: "
                 + ", ".join(f"{r['framework']} on {r['model']}" for r in busy) if busy else "")
              + "): the figures are upper bounds on the times")
    (out / "results.json").write_text(json.dumps({"peaks": peaks, "load_before": load_before,
                                                  "results": results}, indent=1))
    print(f"\nresults: {out / 'results.json'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
