"""The weight-sync check's tolerance follows the dtypes the two sides compute in (rlvr.weight_check). One bound,
1e-3 (0.01 in the SmolLM2 configs), was applied whatever the dtypes: a bf16 GPU run, learner and generator both in
bf16 with different kernels, would have stopped at its first check with WeightSyncError although its weights were
right. Measured here on SmolLM2-135M-Instruct: bf16 against fp32 on the same weights moves the probe's log-probs by
~0.1, far over 1e-3 and well under the bf16 bound; corrupted weights move them by more than 1."""

from __future__ import annotations

import pytest
import torch

from rlvr.config import BF16_TOLERANCE, WeightSyncConfig
from rlvr.weight_check import PROBE_MESSAGES, PROBE_TOKENS, max_gap, tolerance_for


def test_the_bound_is_the_bf16_one_when_either_side_computes_in_bf16():
    cfg = WeightSyncConfig()
    bounds = {"tolerance": cfg.tolerance, "bf16_tolerance": cfg.bf16_tolerance}
    fp32, bf16 = {"compute_dtype": "float32", "dtype": "float32"}, {"compute_dtype": "bfloat16", "dtype": "bfloat16"}
    assert tolerance_for(fp32, fp32, **bounds) == ("tolerance", 1e-3)
    assert tolerance_for(bf16, bf16, **bounds) == ("bf16_tolerance", BF16_TOLERANCE)
    assert tolerance_for(fp32, bf16, **bounds)[0] == tolerance_for(bf16, fp32, **bounds)[0] == "bf16_tolerance"
    assert tolerance_for({}, {}, **bounds) == ("tolerance", 1e-3)  # nothing said: fp32, the strict bound
    assert max_gap([-1.0, -2.0], [-1.1, -1.5]) == pytest.approx(0.5)


@pytest.mark.slow
def test_bf16_against_fp32_on_the_same_weights_passes_the_bf16_bound_only(smollm2_dir):
    """The check as the driver runs it, greedy probe on an HF generator, scored by the same weights in fp32: the
    fp32 generator agrees within `tolerance`; the bf16 one (emulated where the CPU lacks bf16: 12 tokens) exceeds
    it and stays within `bf16_tolerance`; weights with noise exceed both."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from core.tokens import chat_ids
    from rlvr.actors.generator import Generator

    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    probe = chat_ids(tok, PROBE_MESSAGES)
    reference = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32).train(False)

    def learner_logprobs(response: list[int]) -> list[float]:
        ids = torch.tensor([probe + response])
        with torch.no_grad():
            logits = reference(input_ids=ids).logits[0, len(probe) - 1:-1].float()
        return torch.log_softmax(logits, -1).gather(-1, torch.tensor(response)[:, None])[:, 0].tolist()

    gaps = {}
    for dtype in ("float32", "bfloat16"):
        gen = Generator(str(smollm2_dir), backend="hf", dtype=dtype, max_model_len=256)
        (out,) = gen.generate([probe], [0], max_new_tokens=PROBE_TOKENS, temperature=0.0)
        gaps[dtype] = max_gap(out.logprobs, learner_logprobs(out.response_ids))
        if dtype == "float32":
            torch.manual_seed(0)
            noisy = {k: v + 0.05 * torch.randn_like(v) for k, v in reference.state_dict().items()}
            gen.load_weights(noisy)
            (bad,) = gen.generate([probe], [0], max_new_tokens=PROBE_TOKENS, temperature=0.0)
            gaps["corrupted"] = max_gap(bad.logprobs, learner_logprobs(bad.response_ids))
    cfg = WeightSyncConfig()
    assert gaps["float32"] < cfg.tolerance, gaps
    assert cfg.tolerance < gaps["bfloat16"] < cfg.bf16_tolerance, gaps
    assert gaps["corrupted"] > cfg.bf16_tolerance, gaps
