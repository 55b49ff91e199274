"""RLVR: reinforcement learning with verifiable rewards (PPO, GRPO) on Ray, vLLM and DeepSpeed.

Kept import-light on purpose: `import rlvr` must not pull torch, Ray or vLLM.
"""

__version__ = "0.1.0"
