"""generation.backend/dtype "auto": the probe picks the faster candidate, caches the verdict under $RLVR_CACHE by
model, device and threads, and a later generator reads it instead of probing again."""

from __future__ import annotations

import json

import pytest

from rlvr.actors import backend_probe


def test_auto_backend_probes_once_per_key_and_keeps_the_faster(tmp_path, monkeypatch, tiny_model_dir):
    monkeypatch.setenv("RLVR_CACHE", str(tmp_path))
    monkeypatch.setattr(backend_probe, "candidates_for", lambda b, d, dev: [("vllm", "float32"), ("hf", "float32")])
    calls = []

    def fake_probe(model, backend, dtype, **kw):
        calls.append((backend, dtype, kw["threads"]))
        return {"vllm": 50.0, "hf": 80.0}[backend]

    monkeypatch.setattr(backend_probe, "probe", fake_probe)
    args = dict(backend="auto", dtype=None, device="cpu", max_model_len=128, max_num_seqs=8)
    assert backend_probe.choose(str(tiny_model_dir), threads=1, **args) == ("hf", "float32")
    assert calls == [("vllm", "float32", 1), ("hf", "float32", 1)]
    assert backend_probe.choose(str(tiny_model_dir), threads=1, **args) == ("hf", "float32")
    assert len(calls) == 2  # cached
    cached = json.loads((tmp_path / "generation_probe.json").read_text())
    (verdict,) = cached.values()
    assert verdict["tokens_per_s"] == {"vllm/float32": 50.0, "hf/float32": 80.0}
    backend_probe.choose(str(tiny_model_dir), threads=2, **args)  # another thread count: another key
    assert len(calls) == 4
    # a concrete choice is never probed
    assert backend_probe.choose(str(tiny_model_dir), threads=1, backend="hf", dtype="float32", device="cpu",
                                max_model_len=128, max_num_seqs=8) == ("hf", "float32")
    assert len(calls) == 4


def test_bf16_is_a_candidate_only_where_the_cpu_has_it(monkeypatch):
    import core.device

    monkeypatch.setattr(core.device, "cpu_supports_bf16", lambda: False)
    assert backend_probe.candidates_for("hf", "auto", "cpu") == [("hf", "float32")]
    monkeypatch.setattr(core.device, "cpu_supports_bf16", lambda: True)
    assert backend_probe.candidates_for("hf", "auto", "cpu") == [("hf", "float32"), ("hf", "bfloat16")]
    assert backend_probe.candidates_for("hf", None, "cuda") == [("hf", "bfloat16")]


@pytest.mark.slow
def test_a_real_probe_measures_the_hf_backend(tiny_model_dir):
    rate = backend_probe.probe(str(tiny_model_dir), "hf", "float32", threads=1, max_model_len=256, max_num_seqs=4)
    assert rate > 0
