"""Adapters so our verifiers serve other trainers unchanged. Each goes through `rewards.scoring.score_batch`, so
any registered verifier works and every call is time-bounded in a worker process.

- `rewards.adapters.openrlhf`: a reward-function file for OpenRLHF's `--reward.remote_url` (`--remote_rm_url`).
- `rewards.adapters.verl`: `compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs)`.
- `rewards.adapters.trl`: TRL reward functions `(prompts, completions, **dataset_columns) -> list[float]`.
None of these frameworks needs to be installed; torch is imported only inside the OpenRLHF adapter's call.
"""
