"""Placement decisions without Ray: which weight-sync transport a layout gets (NCCL only when learner rank 0 and
every generator hold a GPU of their own: never a deadlock on a shared GPU), the config values it accepts, and the
per-call timeout of generation (scaled with the response length)."""

from __future__ import annotations

import pytest
from rlvr_core_helpers import REPO

from core.config import ConfigError, load_config
from rlvr.config import ResourcesConfig, RLVRConfig
from rlvr.errors import WeightSyncError
from rlvr.weight_sync import choose_transport


def _gpu(node: str, *gpus: str) -> dict:
    return {"device": "cuda", "node_id": node, "node_ip": f"ip-{node}", "gpu_ids": list(gpus)}


CPU = {"device": "cpu", "node_id": "a", "gpu_ids": []}


def test_auto_picks_nccl_only_for_distinct_gpus():
    assert choose_transport("auto", _gpu("a", "0"), [_gpu("a", "1"), _gpu("b", "0")]) == "nccl"
    assert choose_transport("auto", _gpu("a", "0"), [_gpu("a", "0")]) == "object_store"  # colocated on one GPU
    assert choose_transport("auto", _gpu("a", "0"), [_gpu("b", "1"), _gpu("b", "1")]) == "object_store"
    assert choose_transport("auto", _gpu("a", "0"), [CPU]) == "object_store"  # generator on CPU
    assert choose_transport("auto", CPU, [CPU]) == "object_store"
    assert choose_transport("auto", {**_gpu("a"), "gpu_ids": []}, [_gpu("b", "0")]) == "object_store"


def test_explicit_nccl_on_a_shared_gpu_is_an_error_naming_who_shares_it():
    with pytest.raises(WeightSyncError, match=r"generator 0 shares GPU 0 of node ip-a with learner rank 0"):
        choose_transport("nccl", _gpu("a", "0"), [_gpu("a", "0")])
    with pytest.raises(WeightSyncError, match=r"generator 1 is not on a CUDA GPU"):
        choose_transport("nccl", _gpu("a", "0"), [_gpu("a", "1"), CPU])
    assert choose_transport("nccl", _gpu("a", "0"), [_gpu("a", "1")]) == "nccl"


def test_gloo_and_object_store_are_taken_as_asked_on_any_layout():
    for transport in ("gloo", "object_store"):
        assert choose_transport(transport, _gpu("a", "0"), [_gpu("a", "0")]) == transport
        assert choose_transport(transport, CPU, [CPU]) == transport
    with pytest.raises(ValueError, match="unknown weight_sync.transport 'ipc'"):
        choose_transport("ipc", CPU, [CPU])


def test_config_accepts_gloo_and_rejects_unknown_transports():
    cfg = load_config(RLVRConfig, REPO / "configs/rlvr/tiny_ppo.yaml", ["weight_sync.transport=gloo"])
    assert cfg.weight_sync.transport == "gloo"
    assert cfg.dist.master_addr is None and cfg.resources.startup_timeout_s == 120
    with pytest.raises(ConfigError, match="transport"):
        load_config(RLVRConfig, REPO / "configs/rlvr/tiny_ppo.yaml", ["weight_sync.transport=ipc"])


def test_generation_timeout_grows_with_response_length_and_waves():
    res = ResourcesConfig()
    assert res.generation_timeout_s(128, 16, 64) == res.call_timeout_s == 600  # short: the call timeout
    assert res.generation_timeout_s(2048, 64, 256) == 1024  # 2048 tokens at the 2 tokens/s floor
    assert res.generation_timeout_s(2048, 512, 256) == 2048  # two waves of max_num_seqs
    assert ResourcesConfig(min_decode_tokens_per_s=8).generation_timeout_s(16384, 1, 1) == 2048
