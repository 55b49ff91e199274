"""rlvr.actors.group.get_all: which failure the driver reports when actors fail together. A rank whose collective
broke because its peer died (gloo's "Connection reset by peer") must not hide the peer's death: the run's error
names the dead actor (as the two-node test's lost worker requires, whichever of the two Ray reports first). Small
Ray actors stand in for learner ranks; no model."""

from __future__ import annotations

import threading
import time

import pytest

pytest.importorskip("ray")
pytestmark = pytest.mark.ray

GLOO_RESET = ("[/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:537] Read error [10.231.0.2]:22681: "
              "Connection reset by peer")


@pytest.fixture(scope="module")
def ray_local():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def _peer_class(ray):
    @ray.remote(num_cpus=0)
    class Peer:
        def fail_after(self, seconds: float, message: str):
            time.sleep(seconds)
            raise RuntimeError(message)

        def wait(self, seconds: float):
            time.sleep(seconds)
            return "done"

    return Peer


def test_a_broken_collective_reports_the_peer_that_died(ray_local):
    from rlvr.actors.group import get_all
    from rlvr.errors import ActorFailure

    Peer = _peer_class(ray_local)
    rank0, rank1 = Peer.remote(), Peer.remote()
    refs = [rank0.fail_after.remote(1.0, GLOO_RESET), rank1.wait.remote(60)]
    threading.Timer(2.0, lambda: ray_local.kill(rank1)).start()  # the peer dies after rank 0 has failed
    t0 = time.monotonic()
    with pytest.raises(ActorFailure) as caught:
        get_all(refs, timeout_s=60, what="learner update", names=["learner rank 0", "learner rank 1"])
    message = str(caught.value)
    assert "learner rank 1 died" in message, message
    assert "then learner rank 0: " in message and "Connection reset by peer" in message, message
    assert time.monotonic() - t0 < 30


def test_an_actors_own_error_is_passed_on_at_once(ray_local):
    from rlvr.actors.group import get_all

    Peer = _peer_class(ray_local)
    rank0, rank1 = Peer.remote(), Peer.remote()
    refs = [rank0.fail_after.remote(0.1, "ValueError-like bug in rank 0"), rank1.wait.remote(30)]
    t0 = time.monotonic()
    with pytest.raises(ray_local.exceptions.RayTaskError) as caught:
        get_all(refs, timeout_s=60, what="learner update", names=["learner rank 0", "learner rank 1"])
    assert "bug in rank 0" in str(caught.value) and caught.value.actor_name == "learner rank 0"
    assert time.monotonic() - t0 < 10  # not held back waiting for the busy peer
    ray_local.kill(rank1)


def test_a_broken_collective_with_every_peer_alive_is_passed_on_after_the_grace(ray_local, monkeypatch):
    import rlvr.actors.group as group

    monkeypatch.setattr(group, "PEER_GRACE_S", 1.0)
    Peer = _peer_class(ray_local)
    rank0, rank1 = Peer.remote(), Peer.remote()
    refs = [rank0.fail_after.remote(0.1, GLOO_RESET), rank1.wait.remote(30)]
    with pytest.raises(ray_local.exceptions.RayTaskError) as caught:
        group.get_all(refs, timeout_s=60, what="learner update", names=["learner rank 0", "learner rank 1"])
    assert "Connection reset by peer" in str(caught.value)
    ray_local.kill(rank1)
