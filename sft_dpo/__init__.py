"""The prelude before RL: SFT, DPO (incl. length-normalised) and reward-model training on DeepSpeed."""
