"""A deterministic, resumable prompt sampler: fixed-size batches, each epoch a seeded permutation."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator, Sequence
from typing import Any

from rlvr.data.prompts import PromptRow, PromptSet


class PromptSampler:
    """Fixed-size batches, each epoch a seeded permutation of the whole set; batches run across epoch ends, so
    every batch is full and every prompt is seen exactly once per epoch.

    The cursor (epoch, position) is the whole state: `state_dict()` after k batches, loaded into a fresh sampler,
    gives exactly the batches k+1, k+2, ... of an uninterrupted run (no replay, no skipped epoch). The
    permutation of epoch e depends only on (seed, e, number of prompts)."""

    def __init__(self, prompt_set: PromptSet | Sequence[PromptRow], batch_size: int, seed: int = 0):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.rows = list(prompt_set)
        if not self.rows:
            raise ValueError("cannot sample from an empty prompt set")
        self.batch_size = batch_size
        self.seed = seed
        self.fingerprint = hashlib.sha256("\n".join(r.id for r in self.rows).encode()).hexdigest()[:16]
        self.epoch = 0
        self.position = 0
        self._order = self._permutation(0)

    def _permutation(self, epoch: int) -> list[int]:
        order = list(range(len(self.rows)))
        random.Random(f"prompts/{self.seed}/{epoch}").shuffle(order)
        return order

    def next_batch(self) -> list[PromptRow]:
        batch = []
        while len(batch) < self.batch_size:
            if self.position == len(self._order):
                self.epoch += 1
                self.position = 0
                self._order = self._permutation(self.epoch)
            take = min(self.batch_size - len(batch), len(self._order) - self.position)
            batch.extend(self.rows[i] for i in self._order[self.position:self.position + take])
            self.position += take
        return batch

    def __iter__(self) -> Iterator[list[PromptRow]]:
        while True:
            yield self.next_batch()

    @property
    def samples_seen(self) -> int:
        return self.epoch * len(self.rows) + self.position

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed, "num_prompts": len(self.rows),
                "fingerprint": self.fingerprint, "batch_size": self.batch_size}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the cursor. The prompt set and seed must be the ones the state was saved with."""
        for key, mine in (("seed", self.seed), ("num_prompts", len(self.rows)), ("fingerprint", self.fingerprint)):
            if state.get(key) != mine:
                raise ValueError(f"sampler state does not match this run: saved {key}={state.get(key)!r}, "
                                 f"now {mine!r} (same prompt sources and seed are needed for an exact resume)")
        epoch, position = int(state["epoch"]), int(state["position"])
        if epoch < 0 or not 0 <= position <= len(self.rows):
            raise ValueError(f"sampler state has an invalid cursor: epoch {epoch}, position {position}")
        self.epoch, self.position = epoch, position
        self._order = self._permutation(epoch)
