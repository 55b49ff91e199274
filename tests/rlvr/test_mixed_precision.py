"""CPU bf16 autocast (engine.cpu_autocast): fp32 weights and optimiser state, bf16 matmuls. Its loss and
gradients must agree with fp32 within a stated tolerance: PPO loss within 2% (relative), gradient direction
cosine > 0.99, token log-probs within 0.05 nats."""

from __future__ import annotations

import pytest
import torch

from core.device import autocast_context, cpu_supports_bf16, detect_device
from rlvr.algorithms import logprobs_from_logits, ppo_policy_loss


def _model():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=128, num_attention_heads=4, num_key_value_heads=2, head_dim=32,
                      num_hidden_layers=2, intermediate_size=256, vocab_size=257, max_position_embeddings=128)
    return LlamaForCausalLM(cfg)


def _loss_and_grad(model, ids, mode):
    model.zero_grad()
    with autocast_context(mode, detect_device("cpu", 1)):
        logits = model(input_ids=ids).logits[:, :-1]
    lp = logprobs_from_logits(logits.float(), ids[:, 1:])
    adv = torch.linspace(-1, 1, ids.shape[0])[:, None].expand_as(lp)
    loss, _ = ppo_policy_loss(lp, lp.detach() - 0.01, adv, torch.ones_like(lp))
    loss.backward()
    grad = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    return loss.item(), grad, lp.detach()


def test_autocast_modes():
    cpu = detect_device("cpu", 1)
    with autocast_context("off", cpu):
        assert not torch.is_autocast_enabled("cpu")
    with autocast_context("bf16", cpu):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    with autocast_context("auto", cpu):
        assert torch.is_autocast_enabled("cpu") == cpu_supports_bf16()
    with pytest.raises(ValueError, match="autocast mode"):
        autocast_context("fp8", cpu)


def test_bf16_autocast_loss_and_gradients_match_fp32():
    model = _model()
    assert all(p.dtype == torch.float32 for p in model.parameters())
    ids = torch.randint(0, 257, (4, 48), generator=torch.Generator().manual_seed(3))
    loss32, grad32, lp32 = _loss_and_grad(model, ids, "off")
    loss16, grad16, lp16 = _loss_and_grad(model, ids, "bf16")
    assert all(p.dtype == torch.float32 for p in model.parameters())  # master weights untouched
    assert abs(loss16 - loss32) <= 0.02 * abs(loss32)
    assert torch.nn.functional.cosine_similarity(grad16, grad32, dim=0) > 0.99
    assert (lp16 - lp32).abs().max() < 0.05


# ---- DeepSpeed precision (engine.precision; core.engine.precision_for) ----



def _cuda_bf16():
    from core.device import DeviceInfo

    return DeviceInfo("cuda", "nccl", "bfloat16", "bfloat16", 1)


@pytest.fixture(scope="module")
def ds_group():
    from core.engine import free_port, init_distributed

    device = detect_device("cpu", 1)
    init_distributed(0, 1, master_port=free_port(), device=device)
    return device


def test_bf16_deepspeed_configs_accumulate_gradients_in_fp32():
    """On a bf16 GPU (engine.precision auto): ZeRO 2/3 hold bf16 weights and accumulate in fp32 (DeepSpeed's
    default would be bf16, the model dtype); ZeRO 0, where DeepSpeed has no fp32 accumulation for bf16, is
    torch.autocast over fp32 weights with no bf16 gradient reduction; ZeRO 1 is refused (see below)."""
    from core.engine import EngineSetupError, deepspeed_config, precision_for
    from core.run import EngineConfig, OptimConfig

    optim = OptimConfig(per_device_batch_size=2, gradient_accumulation_steps=4)
    for stage in (2, 3):
        engine = EngineConfig(zero_stage=stage)
        cfg = deepspeed_config(optim, engine, world_size=2, device=_cuda_bf16())
        assert cfg["bf16"]["enabled"] and cfg["data_types"] == {"grad_accum_dtype": "fp32"}
        assert "torch_autocast" not in cfg and precision_for(engine, _cuda_bf16()).compute == "bfloat16"
    cfg = deepspeed_config(optim, EngineConfig(zero_stage=0), world_size=2, device=_cuda_bf16())
    assert not cfg["bf16"]["enabled"] and "data_types" not in cfg
    assert cfg["torch_autocast"] == {"enabled": True, "dtype": "bfloat16", "lower_precision_safe_modules": []}
    with pytest.raises(EngineSetupError, match="engine.zero_stage=1 with bf16.*engine.precision=auto"):
        deepspeed_config(optim, EngineConfig(zero_stage=1), world_size=2, device=_cuda_bf16())
    # fp32 asked for, or a CPU (auto): neither bf16 nor autocast
    for engine, device in ((EngineConfig(zero_stage=2, precision="fp32"), _cuda_bf16()),
                           (EngineConfig(zero_stage=2), detect_device("cpu", 1))):
        cfg = deepspeed_config(optim, engine, world_size=1, device=device)
        assert not cfg["bf16"]["enabled"] and "torch_autocast" not in cfg and "data_types" not in cfg


def test_zero1_with_bf16_is_one_config_error_at_load():
    from rlvr_core_helpers import REPO

    from core.config import ConfigError, load_config
    from rlvr.config import RLVRConfig

    with pytest.raises(ConfigError) as err:
        load_config(RLVRConfig, REPO / "configs/rlvr/tiny_ppo.yaml", ["engine.zero_stage=1", "engine.precision=bf16"])
    problems = [line for line in str(err.value).splitlines()[1:] if line.strip()]
    assert len(problems) == 1 and "engine.zero_stage=1 with bf16" in problems[0]


class _Scale(torch.nn.Module):
    """Outputs w * c: the gradient of the summed output with respect to every weight is c."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(2, 4))
        self.b = torch.nn.Parameter(torch.ones(1))

    def forward(self, c):
        return torch.cat([(self.w * c).flatten(), self.b * c])


@pytest.mark.parametrize("stage", [0, 2, 3])
def test_bf16_engines_accumulate_micro_batch_gradients_in_fp32(ds_group, stage):
    """Two micro-batches with gradients 1 and 0.002 per weight: summed in bf16 (8-bit mantissa, spacing 2^-7 at
    1) the 0.002 vanishes and the step's gradient norm is sqrt(9) x 1.0; in fp32 it is sqrt(9) x 1.002. Before
    the fix DeepSpeed's ZeRO 2/3 summed in bf16 (measured: 1.0). Runs wherever bf16 is (emulated here when the CPU
    lacks it: the model has 9 weights)."""
    import math

    from core.engine import build_engine
    from core.losses import train_micro_batches
    from core.run import EngineConfig, OptimConfig

    optim = OptimConfig(lr=0.0, per_device_batch_size=1, gradient_accumulation_steps=2, max_grad_norm=1e6)
    engine = build_engine(_Scale(), optim, EngineConfig(device="cpu", zero_stage=stage, precision="bf16"),
                          total_steps=1, world_size=1, device=ds_group)
    out = train_micro_batches(engine, [1.0, 0.002], lambda c: (engine(torch.tensor(c)).sum(), {}))
    bf16_of_0002 = float(torch.tensor(0.002, dtype=torch.bfloat16))
    assert out.grad_norm == pytest.approx(math.sqrt(9) * (1 + bf16_of_0002), rel=1e-5)


def test_bf16_under_zero0_is_autocast_over_fp32_weights(ds_group):
    """ZeRO 0 with bf16: fp32 weights (a model loaded in bf16 is upcast, else it would train in pure bf16), bf16
    matmuls in the engine's forward, fp32 gradients."""
    from core.engine import build_engine
    from core.run import EngineConfig, OptimConfig

    model = _model().to(torch.bfloat16)
    engine = build_engine(model, OptimConfig(lr=1e-3), EngineConfig(device="cpu", precision="bf16"), total_steps=1,
                          world_size=1, device=ds_group)
    assert all(p.dtype == torch.float32 for p in engine.module.parameters())
    logits = engine(input_ids=torch.randint(0, 257, (2, 16), generator=torch.Generator().manual_seed(0))).logits
    assert logits.dtype == torch.bfloat16
    engine.backward(logits.float().logsumexp(-1).mean())
    assert all(p.grad.dtype == torch.float32 for p in engine.module.parameters() if p.grad is not None)


def test_deepspeed_zero1_bf16_still_drops_small_micro_batch_gradients(ds_group):
    """Why ZeRO 1 with bf16 is refused: DeepSpeed 0.19.8's ZeRO-1 bf16 path (BF16_Optimizer) loses the second
    micro-batch's 0.002 even with fp32 grad_accum_dtype (the norm comes out sqrt(9) x 1.0). When a DeepSpeed
    upgrade makes this fail, the refusal (core.run.ZERO1_BF16) can go."""
    import math

    import deepspeed

    from core.engine import deepspeed_config
    from core.losses import train_micro_batches
    from core.run import EngineConfig, OptimConfig

    optim = OptimConfig(lr=0.0, per_device_batch_size=1, gradient_accumulation_steps=2, max_grad_norm=1e6)
    cfg = deepspeed_config(optim, EngineConfig(zero_stage=2), world_size=1, device=_cuda_bf16())
    cfg["zero_optimization"]["stage"] = 1
    model = _Scale()
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.0)
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=cfg)
    assert type(engine.optimizer).__name__ == "BF16_Optimizer"
    out = train_micro_batches(engine, [1.0, 0.002], lambda c: (engine(torch.tensor(c)).sum(), {}))
    assert out.grad_norm == pytest.approx(math.sqrt(9), rel=1e-6)
