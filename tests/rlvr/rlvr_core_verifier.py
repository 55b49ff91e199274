"""A verifier for the tiny random model's tests (importable by name from the reward workers, since pytest puts
tests/rlvr on sys.path): 1.0 when the response contains a digit. A random model hits it often enough that reward
curves are not all zeros, so the determinism and resume checks compare real numbers."""

from rewards.base import Score


def has_digit(response, ground_truth, *, prompt=None):
    found = any(ch.isdigit() for ch in response[:2000])
    return Score(1.0 if found else 0.0, "digit" if found else "no digit")


def raises(response, ground_truth, *, prompt=None):
    raise RuntimeError("this verifier is broken")


def hangs(response, ground_truth, *, prompt=None):
    import time

    time.sleep(3600)
