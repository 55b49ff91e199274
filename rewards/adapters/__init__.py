"""Adapters so our verifiers serve other trainers unchanged. Each goes through `rewards.scoring.score_batch`, so
any registered verifier works and every call is time-bounded in a worker process.

- `rewards.adapters.openrlhf`: a reward-function file for OpenRLHF's `--reward.remote_url` (`--remote_rm_url`);
  reads $RLVR_REWARD_DATASET when loaded.
- `rewards.adapters.verl`: `compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs)`,
  with our semantics or verl's default scorers' (`semantics="verl"`), and `make_compute_score(...)`.
- `rewards.adapters.trl`: TRL reward functions `(prompts, completions, **dataset_columns) -> list[float]`.
None of these frameworks needs to be installed; torch is imported only inside the OpenRLHF adapter's call. Each
adapter checks its configuration when it is set up (file loaded / function made), not at the first reward call.
"""
