"""scripts/gpu_check.sh, the check for a borrowed GPU machine (torch + transformers only, no Ray, vLLM or
DeepSpeed), so that it cannot rot between GPU sessions: the same script with `--device cpu --precision bf16` (the
GPU's bf16 paths, emulated on a CPU without native bf16: a 2-layer SmolLM2-shaped model) runs every phase here and
passes, writing its table to $OUT as the device machine's command does; without a GPU `--device cuda` exits 2 and
runs nothing; a phase over its time or one that imports Ray is a FAIL with the reason; carried wheels are unpacked
only where their module is missing; and what the device command carries stays a few MB."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "gpu_check.sh"
PHASES = ["env", "generator_hf", "learner_zero0", "learner_zero2", "learner_zero3", "collective"]


def _gpu_check_module():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "scripts" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(*args: str, timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1", **env}
    return subprocess.run(["bash", str(SCRIPT), *args], env=full_env, capture_output=True, text=True,
                          timeout=timeout)


def _fake_wheel(folder: Path, module: str, version: str = "1.0") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / f"{module}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr(f"{module}/__init__.py", "VALUE = 42\n")
        z.writestr(f"{module}-{version}.dist-info/METADATA", f"Name: {module}\nVersion: {version}\n")
    return wheel


@pytest.fixture(scope="module")
def carried(smollm2_dir, tmp_path_factory) -> Path:
    """What scripts/gpu_check_prepare.sh --no-wheels writes (the SmolLM2 config and tokenizer), plus one wheel of a
    module nobody has, which the check must unpack and import."""
    out = tmp_path_factory.mktemp("carried")
    proc = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check_prepare.sh"), "--no-wheels", str(out)],
                          env={**os.environ, "PYTHON": sys.executable}, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (out / "smollm2" / "config.json").is_file() and not (out / "smollm2" / "model.safetensors").exists()
    _fake_wheel(out / "wheels", "gpu_check_carried_probe")
    return out


@pytest.mark.slow
def test_the_cpu_rehearsal_passes_every_phase_and_writes_its_table_to_out(carried, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    proc = _run("--device", "cpu", "--precision", "bf16", "--carried", str(carried), OUT=str(out),
                DS_ACCELERATOR="cpu")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    table = proc.stdout.strip()
    assert (out / "gpu_check.txt").read_text().strip() == table
    lines = table.splitlines()
    assert lines[0].split()[:4] == ["phase", "time", "s", "tokens/s"] and lines[-1] == "6/6 phases passed (cpu)"
    rows = {line.split()[0]: line for line in lines[1:-1]}
    assert list(rows) == PHASES and all("PASS" in row for row in rows.values())
    assert "from carried wheels: gpu_check_carried_probe" in rows["env"]
    for stage in (0, 2, 3):
        result = json.loads((out / f"learner_zero{stage}.json").read_text())
        assert result["ok"] and result["bound"] == 0.25  # bf16 on both sides: weight_sync.bf16_tolerance
        assert 0 <= result["gap"] <= result["bound"] and result["gap_stale"] > 0
        assert result["tokens_per_s"] > 0 and result["peak_mib"] > 0
        assert f"ZeRO {stage}" in result["detail"] and "accumulation fp32" in result["detail"]
        assert "compute bfloat16, generator bfloat16" in result["detail"]
    assert "gloo, 1 member, group timeout 30 s" in rows["collective"]
    assert all((out / f"{phase}.log").is_file() for phase in PHASES)


def _config_only(tmp_path: Path) -> Path:
    carried = tmp_path / "carried"
    (carried / "smollm2").mkdir(parents=True)
    (carried / "smollm2" / "config.json").write_text("{}")
    return carried


def test_without_a_gpu_the_cuda_check_exits_2_and_runs_nothing(tmp_path):
    out = tmp_path / "out"
    proc = _run("--carried", str(_config_only(tmp_path)), "--out", str(out), CUDA_VISIBLE_DEVICES="")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "no CUDA GPU visible to torch; nothing was run" in proc.stderr
    assert not (out / "gpu_check.txt").exists()


def test_a_phase_past_its_time_fails_naming_the_timeout_and_the_table_still_comes(tmp_path):
    proc = _run("--device", "cpu", "--carried", str(_config_only(tmp_path)), "--out", str(tmp_path), "--phases", "env",
                "--budget-s", "2", DS_ACCELERATOR="cpu")  # the env phase imports torch, transformers, DeepSpeed
    assert proc.returncode == 1
    assert "FAIL: timed out after 2 s (log: env.log)" in proc.stdout and "0/1 phases passed" in proc.stdout
    assert (tmp_path / "gpu_check.txt").is_file()


def test_a_phase_that_imports_ray_fails_naming_it(tmp_path, tiny_model_dir, monkeypatch):
    pytest.importorskip("ray")
    import ray  # noqa: F401  (as if the phase's code had imported it)

    gpu_check = _gpu_check_module()
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "model").symlink_to(tiny_model_dir)
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    # the gloo group binds an interface through GLOO_SOCKET_IFNAME; undone after the test (later tests start
    # processes, e.g. the two-node cluster, that must choose their own)
    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "lo")
    assert gpu_check.run_phase("collective", "cpu", tmp_path, tmp_path / "work", tmp_path) == 0
    result = json.loads((tmp_path / "collective.json").read_text())
    imported = result["detail"].split("imported ", 1)[-1].split(", ")
    assert not result["ok"] and "ray" in imported  # with whatever else earlier tests imported


def test_carried_wheels_are_unpacked_only_where_their_module_is_missing(tmp_path):
    gpu_check = _gpu_check_module()
    _fake_wheel(tmp_path / "wheels", "gpu_check_missing_module")
    _fake_wheel(tmp_path / "wheels", "json")  # this Python has it: left alone
    assert gpu_check.unpack_missing_wheels(tmp_path / "wheels", tmp_path / "site") == ["gpu_check_missing_module"]
    assert (tmp_path / "site" / "gpu_check_missing_module" / "__init__.py").is_file()
    assert not (tmp_path / "site" / "json").exists()
    # a distribution installed here in an older version than the carried one is unpacked (and shadows it)
    _fake_wheel(tmp_path / "newer", "pytest", version="999.0")
    assert gpu_check.unpack_missing_wheels(tmp_path / "newer", tmp_path / "site2") == ["pytest"]
    _fake_wheel(tmp_path / "older", "pytest", version="0.1")
    assert gpu_check.unpack_missing_wheels(tmp_path / "older", tmp_path / "site3") == []


def test_the_device_command_carries_a_few_mb():
    """The device machine takes 64 MiB per call, working tree included: the tree stays small (the wheels and the
    SmolLM2 config, ~9 MB, are carried from the ignored .gpu_check/, never committed)."""
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    tracked = sum((REPO / f).stat().st_size for f in files if (REPO / f).is_file())
    assert tracked < 16 * 2**20, tracked
    ignored = subprocess.run(["git", "check-ignore", ".gpu_check/wheels/x.whl"], cwd=REPO, capture_output=True)
    assert ignored.returncode == 0, ".gpu_check/ must be ignored by git"
