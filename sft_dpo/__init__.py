"""The prelude before RL: SFT, DPO (incl. length-normalised) and reward-model training on DeepSpeed.

Entry points (each returns core.run.TrainResult; re-running an output_dir resumes, a finished one returns):
    sft_dpo.sft.train_sft(SFTConfig)                    rlvr sft --config configs/sft/....yaml [k=v ...]
    sft_dpo.dpo.train_dpo(DPOConfig)                    rlvr dpo --config configs/dpo/....yaml
    sft_dpo.reward_model.train_reward_model(RMConfig)   rlvr rm  --config configs/rm/....yaml
    sft_dpo.reward_model.load_value_model(path)         RM folder -> module: input_ids -> per-token values [B, T]

Modules: data (rows -> chat messages -> tokens + assistant masks), losses (pure tensor functions), trainer (the
shared loop, checkpoints, metrics), launch (world size / launchers / CLI plumbing), engine (DeepSpeed set-up shared
with rlvr).
"""
