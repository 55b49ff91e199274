"""The layer every stage builds on (`rewards` <- `core` <- `sft_dpo`, `rlvr`): typed configs and their loader,
the DeepSpeed engine set-up, device, logging, checkpoints, metrics and plots, model resolution, the model factory
(every stage's models, LoRA) and the value model, run results, stop tokens and the one chat-prompt tokeniser, the
input preflight, the loss-reduction helper and the procedural task generators.

Import-light on purpose: `import core` loads no torch, DeepSpeed or transformers; import the submodule you need.
Nothing here imports `sft_dpo` or `rlvr`.
"""
