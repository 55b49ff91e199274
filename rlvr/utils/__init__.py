"""Shared plumbing for `sft_dpo` and `rlvr`: typed configs, logging, device selection."""
