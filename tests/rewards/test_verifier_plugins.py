"""The three ways a verifier plugs in: decorator, `module:function` string, `rlvr.verifiers` entry point."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rewards import registry
from rewards.base import Score
from rewards.bounded import BoundedPool
from rewards.registry import UnknownVerifierError, get_verifier, known_verifiers, register
from rewards.scoring import score_batch

PLUGIN_SRC = Path(__file__).resolve().parents[1] / "plugin_pkg"


@pytest.fixture
def clean_registry(monkeypatch):
    """A registry copy (built-ins loaded) that forgets it has scanned plug-ins, restored after the test."""
    known_verifiers()  # built-ins register on first import only: load them into the real registry first
    monkeypatch.setattr(registry, "_registry", dict(registry._registry))
    monkeypatch.setattr(registry, "_loaded", False)


def test_decorator_registers_case_insensitive_names(clean_registry):
    @register("My_Check", "mc")
    def my_check(response, ground_truth, *, prompt=None):
        return Score(float(response == ground_truth), "eq")

    assert get_verifier("my_check") is my_check and get_verifier("MC") is my_check
    assert "my_check" in known_verifiers()


def test_module_function_spec(clean_registry, monkeypatch):
    monkeypatch.syspath_prepend(str(PLUGIN_SRC))
    fn = get_verifier("rlvr_test_plugin:verify_exact_length")
    assert fn("abc", "3").value == 1.0 and fn("ab", "3").value == 0.0


@pytest.mark.parametrize("spec, needle", [
    ("no_such_module_xyz:fn", "cannot import module"),
    ("rewards.gsm8k:no_such_fn", "has no attribute"),
    ("rewards.gsm8k:MAX_RESPONSE_CHARS", "not callable"),
    ("not_a_verifier_name", "known: "),
])
def test_bad_specs_fail_with_clear_errors(spec, needle):
    with pytest.raises(UnknownVerifierError, match=needle):
        get_verifier(spec)


def _install_as_dist_info(target: Path) -> None:
    """What `pip install` leaves behind, minus the copying: the package and a dist-info with entry_points.txt."""
    (target / "rlvr_test_plugin").mkdir(parents=True)
    (target / "rlvr_test_plugin" / "__init__.py").write_text(
        (PLUGIN_SRC / "rlvr_test_plugin" / "__init__.py").read_text())
    dist = target / "rlvr_test_plugin-0.1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: rlvr-test-plugin\nVersion: 0.1.0\n")
    (dist / "entry_points.txt").write_text(
        "[rlvr.verifiers]\nexact_length = rlvr_test_plugin:verify_exact_length\n")


def test_entry_point_plugin(clean_registry, monkeypatch, tmp_path):
    _install_as_dist_info(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    assert "exact_length" in known_verifiers()
    fn = get_verifier("EXACT_LENGTH")
    assert fn("abcd", "4").value == 1.0 and fn("abcd", 4).value == 1.0
    # and through the bounded pool: the worker process loads the plug-in itself (workers started after install)
    with BoundedPool(1, timeout_s=10.0) as pool:
        batch = score_batch(["abcd", "abc", "#### 5"], ["4", "4", "5"], ["exact_length", "exact_length", "gsm8k"],
                            pool=pool)
    assert batch.values == [1.0, 0.0, 1.0] and batch.errors == 0


def test_broken_entry_point_fails_only_when_used(clean_registry, monkeypatch, tmp_path):
    dist = tmp_path / "broken_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[rlvr.verifiers]\nbroken = no_such_module_abc:fn\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    assert get_verifier("gsm8k")("#### 1", "1").value == 1.0  # other verifiers unaffected
    with pytest.raises(UnknownVerifierError, match="entry point 'broken'"):
        get_verifier("broken")("x", "y")


@pytest.mark.slow
def test_pip_installed_plugin_is_found(tmp_path):
    """The real route: pip installs the package; a fresh interpreter finds its verifier by entry point."""
    import shutil

    src, target = tmp_path / "src", tmp_path / "site"
    shutil.copytree(PLUGIN_SRC, src)  # pip builds in the source folder: keep the repository clean
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(src)], check=True, cwd=tmp_path)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(target), str(Path(__file__).resolve().parents[2])]))
    code = "from rewards import get_verifier; print(get_verifier('exact_length')('abc', '3').value)"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "1.0"


def test_concurrent_first_lookups_wait_for_the_load(monkeypatch):
    """Several threads asking at once (OpenRLHF's to_thread calls) must all find a built-in still being imported."""
    from concurrent.futures import ThreadPoolExecutor

    monkeypatch.setattr(registry, "_registry", {})
    monkeypatch.setattr(registry, "_loaded", False)
    monkeypatch.setattr(registry, "BUILTIN_MODULES", ("slow_builtin_xyz",))
    monkeypatch.delitem(sys.modules, "slow_builtin_xyz", raising=False)
    with ThreadPoolExecutor(8) as ex:
        found = list(ex.map(lambda _: get_verifier("slow_builtin")("x", "y").value, range(8)))
    assert found == [1.0] * 8
