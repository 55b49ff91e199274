"""The GPU check: the plain classes of the RL stage on one CUDA GPU, without Ray or vLLM (scripts/gpu_check.sh runs
this file; docs/gpu_check.md says what it covers and what it does not).

    env             torch, CUDA, the GPU, native bf16, DeepSpeed (from the carried wheels); builds the model: the
                    SmolLM2-135M-Instruct config and tokenizer with random weights (--device cpu: 2 layers,
                    hidden 64, the same vocabulary)
    generator_hf    rlvr.actors.generator.Generator, backend hf, on the device in its default dtype
    learner_zero0   rlvr.actors.learner.Learner on the device, engine.precision auto (bf16 on a bf16 GPU),
    learner_zero2   gradient checkpointing, PPO with critic and reference, ZeRO 0 / 2 / 3: one real update on
    learner_zero3   samples the HF generator drew, then the in-process weight load into that generator and the
                    measured learner-generator log-prob gap of the weight-sync check (rlvr.weight_check), before
                    (stale) and after the load; and DeepSpeed's gradient accumulation dtype at that stage (two
                    micro-batches of gradient 1 and 0.002 per weight must sum to 1.002, not bf16's 1.0)
    collective      a one-member weight-sync group (rlvr.actors.weight_transport: NCCL on CUDA, gloo on CPU) with
                    its timeout, and one broadcast of the policy-sized state dict

Every phase runs in a process of its own under its own timeout, never longer than the time left of the whole
check's budget (--budget-s); a phase must not import Ray, vLLM or the other packages the GPU machine lacks
(FORBIDDEN: checked after the phase, a FAIL naming them). One table on stdout and in OUT/gpu_check.txt (OUT:
--out, else $OUT, else a temporary folder), each phase's result in OUT/<phase>.json and the tail of its log in
OUT/<phase>.log.

    python scripts/gpu_check.py [--device cuda|cpu] [--out DIR] [--carried DIR] [--budget-s S]
                                [--phases a,b,...]
Exit status: 0 every phase passed, 1 a phase failed or timed out, 2 no CUDA GPU for --device cuda (nothing run).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# (phase, timeout in seconds); the sum stays under 7 minutes with the budget's margin
PHASES = [("env", 45), ("generator_hf", 45), ("learner_zero0", 90), ("learner_zero2", 90), ("learner_zero3", 90),
          ("collective", 30)]
# not on the GPU machine and not carried: a phase that imports one would fail there
FORBIDDEN = ("ray", "vllm", "datasets", "math_verify", "nltk", "langdetect", "matplotlib", "tensorboard", "trl",
             "lm_eval", "verl", "gguf")
LOG_TAIL_LINES = 60
SAMPLES = {"cuda": dict(prompts=4, per_prompt=2, new_tokens=64), "cpu": dict(prompts=2, per_prompt=2, new_tokens=8)}
PROMPTS = ["What is 17 + 25? Answer with a number.", "Name three primary colours.",
           "Write one sentence about the sea.", "Count from 1 to 5."]


# ---- the orchestrator ----

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    p.add_argument("--out", default=os.environ.get("OUT") or None, help="results folder (default $OUT, else a temp)")
    p.add_argument("--carried", default=str(REPO / ".gpu_check"),
                   help="scripts/gpu_check_prepare.sh's folder: wheels/ (unpacked where their modules are missing) "
                        "and smollm2/ (config and tokenizer)")
    p.add_argument("--budget-s", type=float, default=400.0, help="the whole check's time limit")
    p.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto",
                   help="engine.precision of the learners, and bf16 generators with bf16 (auto: bf16 on a bf16 "
                        "GPU, fp32 on CPU; --device cpu --precision bf16 rehearses the GPU's bf16 paths)")
    p.add_argument("--phases", default=",".join(name for name, _ in PHASES))
    p.add_argument("--run-phase", help=argparse.SUPPRESS)  # internal: one phase, in this process
    p.add_argument("--work", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    carried = Path(args.carried)
    if args.run_phase:
        os.environ["GPU_CHECK_PRECISION"] = args.precision
        return run_phase(args.run_phase, args.device, Path(args.out), Path(args.work), carried / "smollm2")

    out = Path(args.out or tempfile.mkdtemp(prefix="gpu-check-"))
    out.mkdir(parents=True, exist_ok=True)
    if not (carried / "smollm2" / "config.json").is_file():
        print(f"gpu_check: no smollm2/config.json in {carried} (run scripts/gpu_check_prepare.sh)", file=sys.stderr)
        return 1
    if args.device == "cuda" and not _cuda_visible():
        print("gpu_check: no CUDA GPU visible to torch; nothing was run (use --device cpu for the CPU rehearsal)",
              file=sys.stderr)
        return 2
    wanted = args.phases.split(",")
    unknown = [w for w in wanted if w not in dict(PHASES)]
    if unknown:
        print(f"gpu_check: unknown phase(s) {', '.join(unknown)}; known: {', '.join(dict(PHASES))}", file=sys.stderr)
        return 1
    work = Path(tempfile.mkdtemp(prefix="gpu-check-work-"))  # the model's random weights: not sent back
    unpacked = unpack_missing_wheels(carried / "wheels", work / "site")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(work / "site"), str(REPO), os.environ.get("PYTHONPATH", "")])
    os.environ["GPU_CHECK_CARRIED_MODULES"] = ",".join(unpacked)
    deadline = time.monotonic() + args.budget_s
    rows = []
    for name, timeout_s in PHASES:
        if name not in wanted:
            continue
        left = deadline - time.monotonic()
        if left < 1:
            rows.append(_row(name, {"ok": False, "detail": "not run: the check's time budget is spent"}))
            continue
        rows.append(_row(name, _spawn(name, args, out, work, min(timeout_s, left))))
    table = format_table(rows, args.device)
    print(table)
    (out / "gpu_check.txt").write_text(table + "\n")
    return 0 if all(r["ok"] for r in rows) else 1


def _cuda_visible() -> bool:
    import torch  # lazy: the orchestrator itself needs torch only for this question

    return torch.cuda.is_available() and torch.cuda.device_count() > 0


def _spawn(name: str, args, out: Path, work: Path, timeout_s: float) -> dict:
    """Run one phase in a fresh interpreter with `timeout_s`; its result is OUT/<phase>.json."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--run-phase", name, "--device", args.device,
           "--out", str(out), "--work", str(work), "--carried", str(args.carried), "--precision", args.precision]
    result_file = out / f"{name}.json"
    result_file.unlink(missing_ok=True)
    t0 = time.monotonic()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, cwd=REPO)
        log, rc = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as err:  # what it printed so far (bytes here even in text mode)
        log, rc = _text(err.stdout) + _text(err.stderr), None
    wall = time.monotonic() - t0
    (out / f"{name}.log").write_text("\n".join(log.splitlines()[-LOG_TAIL_LINES:]) + "\n")
    if rc is None:
        return {"ok": False, "time_s": wall, "detail": f"timed out after {timeout_s:.0f} s (log: {name}.log)"}
    if not result_file.is_file():
        last = next((line for line in reversed(log.splitlines()) if line.strip()), "no output")
        return {"ok": False, "time_s": wall, "detail": f"exit {rc}: {last[:160]}"}
    result = json.loads(result_file.read_text())
    result["time_s"] = wall
    return result


def wheel_modules(wheel: Path) -> list[str]:
    """The top-level modules a wheel installs (its entries' first path parts, metadata folders left out)."""
    import zipfile

    names = set()
    for entry in zipfile.ZipFile(wheel).namelist():
        top = entry.split("/")[0]
        if not top.endswith((".dist-info", ".data")):
            names.add(top.removesuffix(".py"))
    return sorted(n for n in names if n.isidentifier())


def unpack_missing_wheels(wheels: Path, site: Path) -> list[str]:
    """Unpack into `site` (put first on the phases' path) each wheel of `wheels` whose modules this Python cannot
    import, or whose distribution is installed in an older version (pydantic needs a recent typing-extensions); a
    wheel is a zip laid out as site-packages, so no pip is needed. Returns the modules unpacked."""
    import importlib.metadata
    import importlib.util
    import zipfile

    from packaging.version import Version

    site.mkdir(parents=True, exist_ok=True)
    unpacked = []
    for wheel in sorted(wheels.glob("*.whl")) if wheels.is_dir() else []:
        dist, version = wheel.name.split("-")[:2]
        modules = wheel_modules(wheel)
        missing = all(importlib.util.find_spec(m) is None for m in modules)
        try:
            older = Version(importlib.metadata.version(dist)) < Version(version)
        except importlib.metadata.PackageNotFoundError:
            older = False
        if modules and (missing or older):
            zipfile.ZipFile(wheel).extractall(site)
            unpacked += modules
    return unpacked


def _text(output) -> str:
    return output.decode(errors="replace") if isinstance(output, bytes) else output or ""


def _row(name: str, result: dict) -> dict:
    return {"phase": name, **result}


def _fmt(value, spec: str) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def format_table(rows: list[dict], device: str) -> str:
    head = ("phase", "time s", "tokens/s", f"peak {'GPU' if device == 'cuda' else 'RSS'} MiB",
            "|dlogp| synced (stale)", "bound", "result")
    lines = [head]
    for r in rows:
        gap = "-" if r.get("gap") is None else f"{r['gap']:.3g} ({_fmt(r.get('gap_stale'), '.3g')})"
        result = "PASS" if r["ok"] else "FAIL"
        if r.get("detail"):
            result += f": {r['detail']}"
        lines.append((r["phase"], _fmt(r.get("time_s"), ".1f"), _fmt(r.get("tokens_per_s"), ".0f"),
                      _fmt(r.get("peak_mib"), ".0f"), gap, _fmt(r.get("bound"), "g"), result))
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(head) - 1)]
    text = ["  ".join(str(c).ljust(w) for c, w in zip(line[:-1], widths)) + "  " + line[-1] for line in lines]
    passed = sum(r["ok"] for r in rows)
    return "\n".join(text + [f"{passed}/{len(rows)} phases passed ({device})"])


# ---- the phases (each in its own process) ----

def run_phase(name: str, device: str, out: Path, work: Path, model_config: Path) -> int:
    sys.path.insert(0, str(REPO))
    os.environ.setdefault("DS_ACCELERATOR", device)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    result = {"env": phase_env, "generator_hf": phase_generator, "collective": phase_collective}.get(name)
    if result is None and name.startswith("learner_zero"):
        result = phase_learner(int(name.removeprefix("learner_zero")), device, work)
    elif result is None:
        raise SystemExit(f"unknown phase {name!r}")
    else:
        result = result(device, work, model_config) if name == "env" else result(device, work)
    imported = sorted(m for m in FORBIDDEN if m in sys.modules)
    if imported:
        result["ok"] = False
        result["detail"] = (result.get("detail", "") + f"; imported {', '.join(imported)}").lstrip("; ")
    (out / f"{name}.json").write_text(json.dumps(result))
    return 0


def _peak_mib(device: str) -> float:
    if device == "cuda":
        import torch

        return torch.cuda.max_memory_allocated() / 2**20
    from rlvr.actors.perf import peak_rss_gib

    return peak_rss_gib() * 1024


def phase_env(device: str, work: Path, model_config: Path) -> dict:
    """Versions, the GPU, and the random SmolLM2-shaped model every later phase loads."""
    import deepspeed
    import torch
    import transformers
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    import rlvr.actors.generator  # noqa: F401  (the classes the phases use import without Ray or vLLM)
    import rlvr.actors.learner  # noqa: F401

    config = AutoConfig.from_pretrained(model_config)
    if device == "cpu":  # the CPU rehearsal: SmolLM2's vocabulary and layout, small enough for CI
        config.update({"num_hidden_layers": 2, "hidden_size": 64, "intermediate_size": 128,
                       "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 32})
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.save_pretrained(work / "model")
    AutoTokenizer.from_pretrained(model_config).save_pretrained(work / "model")
    for name in ("generation_config.json", "chat_template.jinja"):
        if (model_config / name).is_file() and not (work / "model" / name).is_file():
            (work / "model" / name).write_bytes((model_config / name).read_bytes())
    params = sum(p.numel() for p in model.parameters())
    carried = [m for m in os.environ.get("GPU_CHECK_CARRIED_MODULES", "").split(",") if m]
    for module in carried:  # every unpacked wheel imports
        __import__(module)
    what = [f"torch {torch.__version__}", f"transformers {transformers.__version__}",
            f"deepspeed {deepspeed.__version__}", f"model {params / 1e6:.1f}M params",
            f"from carried wheels: {' '.join(carried) or 'none'}"]
    if device == "cuda":
        what += [torch.cuda.get_device_name(0), f"CUDA {torch.version.cuda}",
                 f"bf16 {'native' if torch.cuda.is_bf16_supported(including_emulation=False) else 'no'}"]
    return {"ok": True, "detail": ", ".join(what)}


def _prompts(tokenizer, count: int) -> list[list[int]]:
    from core.tokens import chat_ids

    return [chat_ids(tokenizer, [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}]) for i in range(count)]


def _generator(device: str, work: Path):
    from rlvr.actors.generator import Generator

    precision = os.environ.get("GPU_CHECK_PRECISION", "auto")
    dtype = {"bf16": "bfloat16", "fp32": "float32"}.get(precision)  # auto: the generator's default for the device
    return Generator(str(work / "model"), backend="hf", device=device, max_model_len=512, dtype=dtype)


def phase_generator(device: str, work: Path) -> dict:
    gen = _generator(device, work)
    shape = SAMPLES[device]
    prompts = _prompts(gen.tokenizer, shape["prompts"] * shape["per_prompt"])
    gen.generate(prompts[:1], [0], max_new_tokens=2)  # warm-up (CUDA kernels)
    t0 = time.perf_counter()
    outs = gen.generate(prompts, list(range(len(prompts))), max_new_tokens=shape["new_tokens"], temperature=1.0)
    seconds = time.perf_counter() - t0
    tokens = sum(len(o.response_ids) for o in outs)
    ok = tokens > 0 and all(math.isfinite(x) for o in outs for x in o.logprobs)
    return {"ok": ok, "tokens_per_s": tokens / seconds, "peak_mib": _peak_mib(device),
            "detail": f"{gen.dtype}, {len(prompts)} x {shape['new_tokens']} new tokens" + ("" if ok else
                                                                                          ", non-finite log-probs")}


def _probe_gap(learner, gen, probe: list[int]) -> float:
    """The weight-sync check as rlvr.weight_sync.WeightSync.verify runs it, in this process."""
    from rlvr.weight_check import PROBE_TOKENS, max_gap

    (rollout,) = gen.generate([probe], [0], max_new_tokens=PROBE_TOKENS, temperature=0.0)
    return max_gap(rollout.logprobs, learner.sequence_logprobs(probe, rollout.response_ids))


def _accumulates_in_fp32(engine_cfg, device_info) -> tuple[bool, float]:
    """Two micro-batches, gradients 1 and 0.002 per weight, through DeepSpeed at this stage and precision: the
    step's norm over sqrt(9) weights must be 1 + 0.002 (as bf16 rounds it), not bf16's 1.0."""
    import torch

    from core.engine import build_engine
    from core.losses import train_micro_batches
    from core.run import OptimConfig

    class Scale(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(2, 4))
            self.b = torch.nn.Parameter(torch.ones(1))

        def forward(self, c):
            return torch.cat([(self.w * c).flatten(), self.b * c])

    optim = OptimConfig(lr=0.0, per_device_batch_size=1, gradient_accumulation_steps=2, max_grad_norm=1e6)
    engine = build_engine(Scale().to(device_info.torch_device), optim, engine_cfg, total_steps=1, world_size=1,
                          device=device_info)
    dev = device_info.torch_device
    out = train_micro_batches(engine, [1.0, 0.002], lambda c: (engine(torch.tensor(c, device=dev)).sum(), {}))
    sum_per_weight = out.grad_norm / math.sqrt(9)
    return abs(sum_per_weight - (1 + float(torch.tensor(0.002, dtype=torch.bfloat16)))) < 2e-4, sum_per_weight


def phase_learner(stage: int, device: str, work: Path) -> dict:
    import torch

    from core.config import config_to_dict, load_config
    from core.engine import free_port
    from core.tokens import chat_ids
    from rlvr.actors.learner import Learner
    from rlvr.algorithms import compute_advantages
    from rlvr.config import RLVRConfig
    from rlvr.weight_check import PROBE_MESSAGES, tolerance_for

    shape = SAMPLES[device]
    # PPO with critic and reference; 2 mini-batches of 2 micro-batches each (accumulation), gradient checkpointing;
    # lr 1e-4 so that one update moves the probe's log-probs visibly (the stale gap)
    cfg = load_config(RLVRConfig, REPO / "configs" / "rlvr" / "tiny_ppo.yaml", [
        f"model={work / 'model'}", f"output_dir={work / f'run{stage}'}", f"engine.device={device}",
        f"engine.zero_stage={stage}", "engine.gradient_checkpointing=true", "engine.num_threads=1",
        f"engine.precision={os.environ.get('GPU_CHECK_PRECISION', 'auto')}",
        "algorithm=ppo", "ppo.kl_coef=0.05", "ppo.num_mini_batches=2", "optim.per_device_batch_size=1",
        "optim.lr=1.0e-4", f"rollout.prompts_per_step={shape['prompts']}",
        f"rollout.samples_per_prompt={shape['per_prompt']}", f"rollout.max_new_tokens={shape['new_tokens']}"])
    learner = Learner(config_to_dict(cfg), 0, 1, "127.0.0.1", free_port())
    info = learner.info()
    gen = _generator(device, work)
    prompts = _prompts(gen.tokenizer, shape["prompts"])
    reqs = [p for p in prompts for _ in range(shape["per_prompt"])]
    rollouts = gen.generate(reqs, list(range(len(reqs))), max_new_tokens=shape["new_tokens"], temperature=1.0)
    samples = [{"prompt_ids": p, "response_ids": r.response_ids, "logprobs": r.logprobs}
               for p, r in zip(reqs, rollouts)]
    def weight_sums():  # ZeRO-3 holds partitions only: its update shows in the loss and the probe instead
        return {k: v.detach().float().sum().item() for k, v in learner.policy.module.named_parameters()}

    before = weight_sums() if stage != 3 else None
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    prep = learner.prepare(samples)
    batch = {k: prep[k] for k in ("mask", "logprobs", "ref_logprobs", "values")}
    batch["scores"] = torch.tensor([float(i % 2) for i in range(len(samples))])
    batch["finished"] = torch.tensor([r.finish_reason == "stop" for r in rollouts])
    advantages, returns, _ = compute_advantages(cfg.advantage_estimator, batch, cfg.advantage_params())
    metrics = learner.update(1, advantages, returns)
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    tokens = sum(len(s["prompt_ids"]) + len(s["response_ids"]) for s in samples)
    problems = [k for k in ("policy/loss", "policy/grad_norm", "value/loss", "value/grad_norm")
                if not math.isfinite(metrics.get(k, float("nan")))]
    problems += [k for k in ("policy/grad_norm", "value/grad_norm") if not metrics.get(k, 0) > 0]
    if before is not None and weight_sums() == before:
        problems.append("policy weights did not move")

    probe = chat_ids(gen.tokenizer, PROBE_MESSAGES)
    stale = _probe_gap(learner, gen, probe)  # the generator still holds the weights before the update
    sent = learner.full_state_dict()
    gen.load_weights(sent)
    held = gen.model.state_dict()
    if any(not torch.equal(held[k], v.to(held[k].device, held[k].dtype)) for k, v in sent.items()):
        problems.append("the generator's weights differ from the learner's after the load")
    synced = _probe_gap(learner, gen, probe)
    key, bound = tolerance_for(info, gen.info(), tolerance=cfg.weight_sync.tolerance,
                               bf16_tolerance=cfg.weight_sync.bf16_tolerance)
    if not synced <= bound:
        problems.append(f"gap {synced:.3g} > weight_sync.{key} {bound:g}")
    fp32_sums, per_weight = _accumulates_in_fp32(cfg.engine.model_copy(update={"gradient_checkpointing": False}),
                                                 learner.device)
    if not fp32_sums:
        problems.append(f"micro-batch gradients summed to {per_weight:.6f}, not 1.002 (bf16 accumulation)")
    detail = (f"compute {info['compute_dtype']}, generator {gen.dtype}, ZeRO {stage}, grad ckpt; "
              f"policy loss {metrics['policy/loss']:.3g}, grad norm {metrics['policy/grad_norm']:.3g}; "
              f"accumulation {'fp32' if fp32_sums else 'LOST'}")
    return {"ok": not problems, "tokens_per_s": tokens / seconds, "peak_mib": _peak_mib(device), "gap": synced,
            "gap_stale": stale, "bound": bound, "detail": "; ".join(problems) if problems else detail}


def phase_collective(device: str, work: Path) -> dict:
    """A one-member weight-sync group on the device's backend, with the sync's timeout, and one broadcast of the
    policy's state dict."""
    import torch
    from transformers import AutoModelForCausalLM

    from core.engine import free_port
    from rlvr.actors import weight_transport

    backend, dev = ("nccl", "cuda:0") if device == "cuda" else ("gloo", "cpu")
    args = {"host": "127.0.0.1", "port": free_port(), "world_size": 1, "backend": backend, "timeout_s": 30.0,
            "startup_timeout_s": 30.0}
    weight_transport.join_group(rank=0, device=dev, **args)
    pg = weight_transport._GROUPS[(args["host"], args["port"])][0]
    timeout = getattr(getattr(pg, "options", None), "_timeout", None)
    sd = AutoModelForCausalLM.from_pretrained(work / "model", dtype=torch.bfloat16).state_dict()
    nbytes = sum(t.numel() * t.element_size() for t in sd.values())
    t0 = time.perf_counter()
    weight_transport.send_broadcast({k: v.to(dev) for k, v in sd.items()}, device=dev, **args)
    seconds = time.perf_counter() - t0
    problems = []
    if backend == "nccl" and (timeout is None or abs(timeout.total_seconds() - 30.0) > 1e-6):
        problems.append(f"the group's timeout is {timeout}, not 30 s")
    detail = (f"{backend}, 1 member, group timeout {timeout.total_seconds():.0f} s" if timeout is not None
              else f"{backend}, 1 member") + f", {nbytes / 2**20:.0f} MiB in {seconds:.2f} s"
    return {"ok": not problems, "peak_mib": _peak_mib(device), "detail": "; ".join(problems) or detail}


if __name__ == "__main__":
    sys.exit(main())
