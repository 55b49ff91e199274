"""A third-party verifier: 1.0 if the response has exactly `ground_truth` characters."""

from rewards.base import Score


def verify_exact_length(response, ground_truth, *, prompt=None):
    want = int(ground_truth)
    return Score(1.0 if len(response) == want else 0.0, f"length {len(response)}, wanted {want}")
