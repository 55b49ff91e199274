"""RLVR step throughput: our trainer (Ray + vLLM generators + DeepSpeed learners) beside TRL's GRPOTrainer, on the
same model, prompts and lengths. Goal: >= 3x TRL's end-to-end tokens/s.

    python bench/rlvr_step.py                               # tiny model and SmolLM2-135M, ours (GRPO) and TRL
    python bench/rlvr_step.py --models tiny --steps 3       # quicker
    python bench/rlvr_step.py --frameworks ours --algorithm ppo

What is measured, per framework and model, over the steps after `--warmup` (warm-up steps include compilation,
engine start and first-call costs, and are left out):
- tokens/s end to end: (prompt + response tokens of the step's rollouts) / wall time of the step; response tok/s
  counts generated tokens only. Both use each framework's own token counts.
- phases: generation, scoring, learner (log-probs, values, advantages, updates), weight sync. Ours come from the
  driver's per-step timings in metrics.jsonl. TRL's: wall time of `GRPOTrainer._generate` (generation) and
  `_calculate_rewards` (scoring) measured by wrapping them; learner = step - generation - scoring (TRL generates
  with the policy itself on CPU, so it has no sync).
Both run GRPO by default (TRL has no critic), same group size, prompts per step, max new tokens, temperature 1.0,
beta 0.05, one update per rollout batch, same seed, same verifier (our `gsm8k` via rewards.adapters.trl).

Each (framework, model) runs in its own subprocess of this one, one after another, so they never compete for the
CPU and each starts cold. TRL is not a project dependency: `pip install --no-deps trl==1.16.0` (it needs only
accelerate, datasets and transformers, which the project has). Without it the TRL rows are skipped with that hint.
Timings are wall-clock on a shared machine: run when the CPU is quiet, and read them as rough.
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
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

MODELS = {"tiny": "tiny-random", "smollm2": "smollm2-135m-instruct"}
PHASES = ("generation", "scoring", "learner", "sync")
TRL_HINT = "pip install --no-deps trl==1.16.0"
BASE_CONFIG = REPO / "configs" / "rlvr" / "tiny_ppo.yaml"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="tiny,smollm2", help=f"comma list of {', '.join(MODELS)} or model paths")
    p.add_argument("--frameworks", default="ours,trl", help="comma list of ours, trl")
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
    p.add_argument("--backend", default="vllm", choices=["vllm", "hf", "auto"], help="our generation backend")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads per process (both frameworks)")
    p.add_argument("--out", default=None, help="folder for runs and results.json (default: a temp folder)")
    p.add_argument("--timeout", type=int, default=1800, help="seconds per run")
    p.add_argument("--worker", choices=["ours", "trl"], help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if (args.prompts_per_step * args.group_size) % args.micro_batch:
        p.error("--micro-batch must divide prompts-per-step x group-size")
    if args.steps <= args.warmup:
        p.error(f"--steps ({args.steps}) must exceed --warmup ({args.warmup})")
    return args


# ---------------------------------------------------------------------------------------------------------------
# Summaries shared by both workers: per-step records -> figures.

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
    return out


# ---------------------------------------------------------------------------------------------------------------
# Our trainer: the driver, then its metrics.jsonl.

PHASE_KEYS = {"generation": "time/generation_s", "scoring": "time/scoring_s", "learner": "time/learner_s",
              "sync": "time/sync_s"}  # the driver's per-step timings (rlvr/trainer.py)


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
    overrides = [
        f"model={args.model}", f"output_dir={out_dir}", f"seed={args.seed}", f"algorithm={args.algorithm}",
        f"data.train=[{json.dumps(args.data)}]", "data.eval=[]", f"data.max_prompt_tokens={args.max_prompt_tokens}",
        "data.max_dropped_fraction=1.0", f"generation.backend={args.backend}",
        f"rollout.prompts_per_step={args.prompts_per_step}", f"rollout.samples_per_prompt={args.group_size}",
        f"rollout.max_new_tokens={args.max_new_tokens}", "rollout.temperature=1.0",
        "ppo.epochs=1", "ppo.num_mini_batches=1", "ppo.kl_coef=0.05",
        f"optim.per_device_batch_size={args.micro_batch}", "optim.lr=1e-6",
        f"train.total_steps={args.steps}", f"checkpoints.save_every={args.steps + 1}", "train.eval_every=0",
        "checkpoints.resume=never", "train.progress=false", "weight_sync.verify=false", "logging.tensorboard=false",
        f"engine.num_threads={args.threads}", f"generation.threads={args.threads}",
    ]
    cfg = load_config(RLVRConfig, BASE_CONFIG, overrides)
    t0 = time.perf_counter()
    train(cfg)
    total = time.perf_counter() - t0
    tok = AutoTokenizer.from_pretrained(resolve_model(args.model))
    lengths = {r.id: r.prompt_tokens for r in load_prompts([args.data], tokenizer=tok, max_dropped_fraction=1.0)}
    records = our_step_records(read_metrics(out_dir), batch, lengths, args.group_size)
    return {"framework": f"ours ({args.algorithm})", "run_s": total, **summarise(records, args.warmup)}


# ---------------------------------------------------------------------------------------------------------------
# TRL's GRPOTrainer on the same prompts.

def run_trl(args) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from core.models import resolve_model
    from rewards.adapters.trl import make_reward_func
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
    config = GRPOConfig(
        # one generation of `batch` completions per optimiser step, accumulated over micro-batches, as ours
        output_dir=str(out_dir), per_device_train_batch_size=args.micro_batch,
        gradient_accumulation_steps=batch // args.micro_batch,
        num_generations=args.group_size, max_completion_length=args.max_new_tokens, temperature=1.0,
        beta=0.05, learning_rate=1e-6, num_iterations=1, max_steps=args.steps, logging_steps=1,
        save_strategy="no", report_to=[], use_cpu=True, bf16=False, seed=args.seed, data_seed=args.seed,
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
    return {"framework": "TRL GRPOTrainer", "run_s": total, **summarise(steps, args.warmup)}


# ---------------------------------------------------------------------------------------------------------------
# The parent: one subprocess per (model, framework), then a table.

def worker_main(args) -> int:
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)
    result = run_ours(args) if args.worker == "ours" else run_trl(args)
    result["model"] = args.model
    Path(args.result).write_text(json.dumps(result, indent=1))
    return 0


def _child_argv(args, framework: str, model: str, result: Path) -> list[str]:
    keep = ["--algorithm", args.algorithm, "--steps", str(args.steps), "--warmup", str(args.warmup),
            "--prompts-per-step", str(args.prompts_per_step), "--group-size", str(args.group_size),
            "--max-new-tokens", str(args.max_new_tokens), "--micro-batch", str(args.micro_batch),
            "--max-prompt-tokens", str(args.max_prompt_tokens),
            "--data", args.data, "--seed", str(args.seed), "--backend", args.backend, "--threads", str(args.threads)]
    return [sys.executable, str(Path(__file__).resolve()), "--worker", framework, "--model", model,
            "--result", str(result), *keep]


def _fmt(r: dict) -> str:
    phases = " ".join(f"{r[f'{ph}_s']:8.2f}" for ph in PHASES)
    return (f"{r['model']:<24} {r['framework']:<18} {r['steps']:>5} {r['step_s']:8.2f} {phases} "
            f"{r['tokens_per_s']:9.1f} {r['response_tokens_per_s']:9.1f} {r['mean_response_len']:7.1f}")


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        return worker_main(args)
    frameworks = [f.strip() for f in args.frameworks.split(",") if f.strip()]
    if "trl" in frameworks and importlib.util.find_spec("trl") is None:
        print(f"TRL is not installed: its rows are skipped. To compare, install it only for the bench: {TRL_HINT}")
        frameworks.remove("trl")
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="rlvr-bench-"))
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), TOKENIZERS_PARALLELISM="false",
               RAY_AUTH_MODE=os.environ.get("RAY_AUTH_MODE", "disabled"), PYTHONPATH=str(REPO))
    env.pop("RAY_ADDRESS", None)  # ours starts its own local Ray, like `rlvr train` without a cluster
    results, failures = [], []
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        model = MODELS.get(name, name)
        for fw in frameworks:
            result_path = out / f"{name.replace('/', '_')}-{fw}.json"
            log_path = result_path.with_suffix(".log")
            print(f"running {fw} on {model} ({args.steps} steps) ... log: {log_path}", flush=True)
            t0 = time.perf_counter()
            with open(log_path, "w") as log:
                proc = subprocess.run(_child_argv(args, fw, model, result_path), stdout=log,
                                      stderr=subprocess.STDOUT, env=env, timeout=args.timeout, cwd=REPO)
            if proc.returncode != 0 or not result_path.is_file():
                tail = log_path.read_text(errors="replace")[-2000:]
                failures.append(f"{fw} on {model}: exit {proc.returncode}\n{tail}")
                print(f"  FAILED (exit {proc.returncode}); last lines of {log_path}:\n{tail}", flush=True)
                continue
            results.append(json.loads(result_path.read_text()))
            print(f"  done in {time.perf_counter() - t0:.0f} s", flush=True)

    print(f"\nsettings: {args.prompts_per_step} prompts x {args.group_size} samples per step, max_new_tokens "
          f"{args.max_new_tokens}, {args.steps} steps ({args.warmup} warm-up left out), data {args.data}, "
          f"{args.threads} thread(s)/process, host CPUs {os.cpu_count()}")
    print(f"\n{'model':<24} {'framework':<18} {'steps':>5} {'step_s':>8} "
          + " ".join(f"{ph[:8]:>8}" for ph in PHASES) + f" {'tok/s':>9} {'resp_t/s':>9} {'resp_len':>7}")
    for r in results:
        print(_fmt(r))
    print()
    for model in dict.fromkeys(r["model"] for r in results):
        ours = next((r for r in results if r["model"] == model and r["framework"].startswith("ours")), None)
        trl = next((r for r in results if r["model"] == model and r["framework"].startswith("TRL")), None)
        if ours and trl:
            ratio = ours["tokens_per_s"] / trl["tokens_per_s"]
            print(f"{model}: ours / TRL end-to-end tokens/s = {ratio:.2f}x "
                  f"(goal >= 3x: {'met' if ratio >= 3 else 'not met'}); response tokens/s ratio "
                  f"{ours['response_tokens_per_s'] / trl['response_tokens_per_s']:.2f}x")
    (out / "results.json").write_text(json.dumps(results, indent=1))
    print(f"\nresults: {out / 'results.json'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
