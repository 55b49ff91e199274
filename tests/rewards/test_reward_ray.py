"""RELIABILITY.md item 4 where the RL driver runs it: score_batch inside a Ray actor (no main thread, no SIGALRM)."""

from __future__ import annotations

import pytest

HANG_65 = "\\boxed{\\dfrac{5^{(5^{(5^{(5^5)})}-4)}-5}{16}}"


@pytest.mark.slow
@pytest.mark.ray
def test_hung_math_check_inside_a_ray_actor():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        @ray.remote
        class Scorer:
            def __init__(self):
                from rewards.bounded import BoundedPool
                from rewards.scoring import warm_up_worker

                self.pool = BoundedPool(1, 2.0, initializer=warm_up_worker)

            def score(self, responses, truths, datasets):
                from rewards.scoring import score_batch

                batch = score_batch(responses, truths, datasets, pool=self.pool)
                return batch.values, batch.metrics(), self.pool.stats()

        scorer = Scorer.remote()
        values, metrics, stats = ray.get(scorer.score.remote([HANG_65, "#### 18", "\\boxed{2}"], ["3", "18", "2"],
                                                             ["math", "gsm8k", "math"]), timeout=120)
        assert values == [0.0, 1.0, 1.0]
        assert metrics["reward/timeouts"] == 1.0 and metrics["reward/errors"] == 0.0
        assert stats["timeouts"] == 1 and stats["workers"] == 1
        values, _, _ = ray.get(scorer.score.remote(["\\boxed{4}"], ["4"], ["math"]), timeout=120)
        assert values == [1.0]
    finally:
        ray.shutdown()
