"""The IFEval RLVR recipe (configs/rlvr/smollm2_ifeval.yaml) runs end to end on the tiny model: procedural
IFEval prompts of all 25 families, trained on the `ifeval_answer` reward and evaluated with Google's strict
verdict, asynchronous rollouts with the reference on the generators, a checkpoint. The plumbing, not the gain
(the SmolLM2 run and its figures are in the README, "IFEval")."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("ray")
pytestmark = [pytest.mark.ray, pytest.mark.slow]

from rlvr_core_helpers import REPO  # noqa: E402

from core.config import load_config  # noqa: E402
from core.metrics import read_metrics  # noqa: E402
from rlvr.config import RLVRConfig  # noqa: E402

CONFIG = REPO / "configs" / "rlvr" / "smollm2_ifeval.yaml"


def test_ifeval_recipe_runs_on_the_tiny_model(tmp_path, tiny_model_dir):
    import ray

    from rlvr.driver import train
    from rlvr.trainer import RLVRTrainer

    overrides = [f"model={tiny_model_dir}", f"output_dir={tmp_path / 'run'}", "generation.backend=hf",
                 "rollout.prompts_per_step=2", "rollout.samples_per_prompt=2", "rollout.max_new_tokens=8",
                 "optim.per_device_batch_size=2", "data.eval_size=4", "train.total_steps=2", "train.eval_every=0",
                 "checkpoints.save_every=2", "train.progress=false", "logging.tensorboard=false",
                 "weight_sync.verify_every=1"]
    cfg = load_config(RLVRConfig, CONFIG, overrides)
    assert cfg.rollout.async_steps == 1 and cfg.ppo.reference_on_generators  # the recipe as shipped
    trainer = RLVRTrainer(cfg)  # the data side alone: which verifier trains, which reports
    assert trainer.train_set.verifier_counts() == {"ifeval_answer": len(trainer.train_set)}
    assert {r.dataset for r in trainer.eval_rows} == {"ifeval"} and len(trainer.eval_rows) == 4
    families = {iid for r in trainer.train_set for iid in json.loads(r.ground_truth)["instruction_id_list"]}
    assert len(families) == 25
    trainer.pool.close()

    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    try:
        result = train(cfg)
    finally:
        ray.shutdown()
    rows = read_metrics(result.output_dir)
    steps = [r for r in rows if r["step"] > 0 and "reward/mean" in r]
    assert [r["step"] for r in steps] == [1, 2]
    assert all(0.0 <= r["reward/mean"] <= 1.0 for r in steps)  # verifier scores in [0, 1]
    assert [r["rollout/staleness"] for r in steps] == [0, 1]
    evals = [r for r in rows if "eval/reward/mean" in r]
    assert [r["step"] for r in evals] == [0, 2] and evals[0]["eval/prompts"] == 4
    assert (result.output_dir / "checkpoints").is_dir() and (result.model_dir / "config.json").is_file()
