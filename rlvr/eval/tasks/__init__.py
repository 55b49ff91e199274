"""Evaluation tasks. Generative: gsm8k, gsm8k_lm_eval, ifeval (need a `rlvr.eval.generation.TextGenerator`). Multiple choice by
log-likelihood: arc_easy, arc_challenge, hellaswag (need a scorer `pairs -> log-likelihoods`)."""

GENERATIVE = ("gsm8k", "gsm8k_lm_eval", "ifeval")
MULTIPLE_CHOICE = ("arc_easy", "arc_challenge", "hellaswag")
