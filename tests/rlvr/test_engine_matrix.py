"""Every engine configuration a real run uses, on CPU: DeepSpeed ZeRO 0/1/2/3 x gradient checkpointing x {PPO with
critic and reference, GRPO} x 1 or 2 learner ranks x the reference on the learners or on the generators (and bf16
where this CPU computes it natively). Each combination trains through a real local Ray (the tiny random Llama, 2
steps), with finite losses, a checkpoint at every step and the weight-sync check after every sync; in half of
the rows the run is then resumed from its step-1 checkpoint and must repeat step 2 exactly.

The full product is 64 runs of ~30 s each, too slow for CI, so the matrix is a pairwise covering subset: 8 rows in
which every pair of values of any two factors occurs at least once (an orthogonal array: with row bits b0 b1 b2,
ZeRO = 2 b2 + b1, checkpointing = b0, algorithm = b0^b1, ranks = b0^b2, reference placement = b0^b1^b2), so a
defect that needs two settings together (ZeRO-3 with 2 ranks, checkpointing with the packed shared-prompt pass
under ZeRO-2, the generator-side reference with ZeRO-1, ...) shows up. Rows with 2 ranks also sync weights over
the gloo collective transport (the NCCL path's CPU twin: under ZeRO-3 every rank gathers before rank 0 sends);
the others use the object store. The resumed rows (one per ZeRO stage, three of them on 2 ranks, where ZeRO
partitions the optimiser state that must come back; each other factor's values both resumed) are rows 1, 2, 4 and
6: a resume costs a second start of every actor (~25 s), and ZeRO 0 on one rank, PPO, reference on the learners
is resumed after a kill in test_rlvr_core.py. Measured here (2 cores, AMD EPYC without AVX-512): ~27 s per row,
~50 s per resumed row, ~5.5 min for the matrix. Two more rows run bf16 (ZeRO 0 = autocast, ZeRO 2 = DeepSpeed bf16) only on a
CPU with native bf16, skipped elsewhere with the reason. ZeRO 1 with bf16 is refused at load (one line, tested in
test_mixed_precision.py), never a traceback mid-run.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from rlvr_core_helpers import tiny_config, write_prompts

from core.device import cpu_supports_bf16, detect_device

ZERO = (0, 1, 2, 3)


def _rows() -> list[tuple[int, bool, str, int, bool]]:
    """(zero stage, gradient checkpointing, algorithm, world size, reference on the generators): the orthogonal
    array of the module docstring."""
    rows = []
    for i in range(8):
        b0, b1, b2 = i & 1, (i >> 1) & 1, (i >> 2) & 1
        rows.append((ZERO[2 * b2 + b1], bool(b0), ("ppo", "grpo")[b0 ^ b1], 1 + (b0 ^ b2), bool(b0 ^ b1 ^ b2)))
    return rows


ROWS = _rows()
RESUMED = [ROWS[i] for i in (1, 2, 4, 6)]


LEVELS = [set(ZERO), {False, True}, {"ppo", "grpo"}, {1, 2}, {False, True}]


def test_the_rows_cover_every_pair_of_factor_values_and_the_resumed_ones_every_value():
    for a in range(5):
        for b in range(a + 1, 5):
            seen = {(row[a], row[b]) for row in ROWS}
            assert seen == {(x, y) for x in LEVELS[a] for y in LEVELS[b]}, (a, b)
    assert all({row[a] for row in RESUMED} == LEVELS[a] for a in range(5))


# ---- frozen engines (the reference) at every stage: no Ray ----

@pytest.fixture(scope="module")
def ds_group():
    from core.engine import free_port, init_distributed

    device = detect_device("cpu", 1)
    init_distributed(0, 1, master_port=free_port(), device=device)
    return device


@pytest.mark.parametrize("stage", ZERO)
def test_a_frozen_engine_builds_at_every_zero_stage_and_computes_like_the_model(ds_group, stage):
    """DeepSpeed refuses an engine without an optimizer at ZeRO 1/2 ('zero stage 2 requires an optimizer'), which
    is how the frozen reference was built: `rlvr train ... engine.zero_stage=2` failed at the learner's build. A
    frozen engine is now ZeRO 0 unless the run is ZeRO-3 (then partitioned), and gives the model's logits."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from core.engine import build_engine
    from core.run import EngineConfig, OptimConfig

    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=64, num_attention_heads=2, num_key_value_heads=1, head_dim=32, num_hidden_layers=2,
                      intermediate_size=128, vocab_size=97, max_position_embeddings=64)
    model = LlamaForCausalLM(cfg).train(False)
    ids = torch.randint(0, 97, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = model(input_ids=ids).logits
    engine = build_engine(model, OptimConfig(per_device_batch_size=2, gradient_accumulation_steps=2),
                          EngineConfig(device="cpu", zero_stage=stage), total_steps=4, world_size=1,
                          device=ds_group, trainable=False)
    assert engine.zero_optimization_stage() == (3 if stage == 3 else 0)
    assert not any(p.requires_grad for p in engine.module.parameters())
    with torch.no_grad():
        torch.testing.assert_close(engine(input_ids=ids).logits, want, atol=1e-5, rtol=1e-5)


# ---- the matrix, end to end through Ray ----

# what a resumed step must repeat exactly
COMPARED = ("policy/loss", "policy/grad_norm", "lr", "reward/mean", "value/loss", "value/grad_norm",
            "policy/entropy", "kl/token_mean", "response/length_mean", "prompt_ids")

BF16_ROWS = [(0, True, "ppo", 1, False), (2, False, "grpo", 2, True)]
NO_NATIVE_BF16 = ("this CPU has no native bf16 (no avx512_bf16/amx_bf16 in /proc/cpuinfo): emulated bf16 trains "
                  "the matrix many times slower; the bf16 engine configs and fp32 accumulation are still tested on "
                  "every CPU in test_mixed_precision.py")


@pytest.fixture(scope="module")
def ray_local():
    import ray

    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def prompts(tmp_path_factory) -> Path:
    return write_prompts(tmp_path_factory.mktemp("prompts") / "prompts.jsonl")


def _overrides(zero: int, ckpt: bool, algorithm: str, world: int, ref_on_generators: bool, precision: str) -> list[str]:
    return [f"engine.zero_stage={zero}", f"engine.gradient_checkpointing={str(ckpt).lower()}",
            f"engine.precision={precision}", f"dist.world_size={world}",
            f"ppo.reference_on_generators={str(ref_on_generators).lower()}",
            f"weight_sync.transport={'gloo' if world == 2 else 'auto'}", "weight_sync.verify=true",
            "weight_sync.verify_every=1", "train.total_steps=2", "checkpoints.save_every=1", "checkpoints.keep_last=2",
            "optim.per_device_batch_size=2"]


def _run_row(tiny_model_dir, prompts, tmp_path, row, precision="fp32", resume=True) -> None:
    from core.checkpoint import CheckpointManager, is_complete
    from core.metrics import read_metrics
    from rlvr.driver import train

    zero, ckpt, algorithm, world, ref_on_generators = row
    extra = _overrides(*row, precision)
    name = "tiny_ppo.yaml" if algorithm == "ppo" else "tiny_grpo.yaml"
    full = tiny_config(name, tiny_model_dir, prompts, tmp_path / "full", *extra)
    assert full.ppo.kl_coef > 0  # every row has a reference (on the learners or the generators)
    result = train(full)
    assert result.steps == 2
    rows = [r for r in read_metrics(tmp_path / "full") if r["step"] > 0]
    assert [r["step"] for r in rows] == [1, 2]
    losses = ("policy/loss", "policy/grad_norm") + (("value/loss", "value/grad_norm") if algorithm == "ppo" else ())
    for r in rows:
        for key in (*losses, "kl/token_mean", "weight_sync/max_logprob_diff"):
            assert isinstance(r.get(key), float) and math.isfinite(r[key]), (key, r.get(key))
        assert r["policy/grad_norm"] > 0
        assert ("value/loss" in r) == (algorithm == "ppo")
    actors = json.loads((tmp_path / "full" / "actors.json").read_text())
    assert actors["weight_sync"] == ("gloo" if world == 2 else "object_store") and len(actors["learners"]) == world
    checkpoints = CheckpointManager(tmp_path / "full" / "checkpoints").complete_checkpoints()
    assert [c.name for c in checkpoints] == ["step_00000001", "step_00000002"] and all(map(is_complete, checkpoints))

    if not resume:
        return
    # resume from the step-1 checkpoint: step 2 again, exactly
    resumed_dir = tmp_path / "resumed"
    shutil.copytree(tmp_path / "full", resumed_dir)
    shutil.rmtree(resumed_dir / "checkpoints" / "step_00000002")
    resumed = tiny_config(name, tiny_model_dir, prompts, resumed_dir, *extra, "checkpoints.resume=must")
    assert train(resumed).steps == 2
    again = read_metrics(resumed_dir)
    assert [r["step"] for r in again] == [1, 2]
    for key in COMPARED:
        assert again[1].get(key) == rows[1].get(key), (key, rows[1].get(key), again[1].get(key))


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.parametrize("row", ROWS, ids=lambda r: f"zero{r[0]}-{'ckpt' if r[1] else 'nockpt'}-{r[2]}-w{r[3]}-"
                                                    f"ref_{'gen' if r[4] else 'learner'}")
def test_engine_configuration_trains_saves_resumes_and_syncs(ray_local, tiny_model_dir, prompts, tmp_path, row):
    _run_row(tiny_model_dir, prompts, tmp_path, row, resume=row in RESUMED)


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.parametrize("row", BF16_ROWS, ids=lambda r: f"bf16-zero{r[0]}-{r[2]}-w{r[3]}")
def test_bf16_engine_configuration_trains_saves_resumes_and_syncs(ray_local, tiny_model_dir, prompts, tmp_path, row):
    if not cpu_supports_bf16():
        pytest.skip(NO_NATIVE_BF16)
    _run_row(tiny_model_dir, prompts, tmp_path, row, precision="bf16")
