"""Shared fixtures for reward tests: one warmed scoring pool for the session (workers start once)."""

from __future__ import annotations

import pytest

from rewards.bounded import BoundedPool
from rewards.scoring import warm_up_worker

# generous bound for "returns within its limit" tests: the limit itself plus worker replacement, never a speed target
POOL_TIMEOUT_S = 3.0


@pytest.fixture(scope="session")
def scoring_pool():
    pool = BoundedPool(2, POOL_TIMEOUT_S, initializer=warm_up_worker, memory_limit_mb=4096)
    yield pool
    pool.close()
