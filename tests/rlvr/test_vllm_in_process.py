"""The vLLM generator's engine must live in the generator's own process, with one worker: the collective weight
sync receives tensors into that process and loads them with `reload_weights(weights_iterator=...)`, which an
engine process or a tensor-parallel worker would never see. A multiprocess setting is refused before vLLM starts;
the running engine's layout is checked once it has; and the model runner in use is recorded (pinned to V1, which
the CPU tests exercise, instead of the V2 runner vLLM 0.32 picks on CUDA whenever Triton imports)."""

from __future__ import annotations

import pytest

from rlvr.actors import generator as generator_module
from rlvr.actors.generator import Generator, check_vllm_layout, vllm_available


def test_a_multiprocess_vllm_setting_is_refused_before_vllm_starts(monkeypatch, tiny_model_dir):
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "1")
    with pytest.raises(ValueError, match="VLLM_ENABLE_V1_MULTIPROCESSING='1'.*in its own process"):
        Generator(str(tiny_model_dir), backend="vllm", max_model_len=64)


def _llm(core: str, executor: str, tp: int = 1, pp: int = 1, v2: bool = False):
    """An object shaped like vllm.LLM as far as check_vllm_layout looks (class names, the parallel config)."""
    from types import SimpleNamespace

    parallel = SimpleNamespace(world_size=tp * pp, tensor_parallel_size=tp, pipeline_parallel_size=pp)
    inner = SimpleNamespace(model_executor=type(executor, (), {})())
    engine_core = type(core, (), {"engine_core": inner})()
    config = SimpleNamespace(parallel_config=parallel, use_v2_model_runner=v2)
    return SimpleNamespace(llm_engine=SimpleNamespace(engine_core=engine_core, vllm_config=config))


def test_the_engine_layout_check_names_what_would_break_the_weight_sync():
    assert check_vllm_layout(_llm("InprocClient", "UniProcExecutor")) == "v1"
    assert check_vllm_layout(_llm("InprocClient", "UniProcExecutor", v2=True)) == "v2"
    with pytest.raises(RuntimeError, match="behind a SyncMPClient, not in this process"):
        check_vllm_layout(_llm("SyncMPClient", "MultiprocExecutor"))
    with pytest.raises(RuntimeError, match="runs 2 workers .*tensor parallel 2"):
        check_vllm_layout(_llm("InprocClient", "MultiprocExecutor", tp=2))


@pytest.mark.slow
def test_the_real_engine_runs_in_process_on_the_v1_runner(tiny_model_dir, monkeypatch):
    if not vllm_available():
        pytest.skip("vllm is not installed")
    monkeypatch.delenv("VLLM_USE_V2_MODEL_RUNNER", raising=False)
    gen = Generator(str(tiny_model_dir), backend="vllm", max_model_len=64, max_num_seqs=2)
    assert gen.info()["vllm_runner"] == "v1"
    assert generator_module.os.environ["VLLM_USE_V2_MODEL_RUNNER"] == "0"
    (out,) = gen.generate([[5, 6, 7]], [0], max_new_tokens=3, temperature=0.0)
    assert len(out.response_ids) == 3
