"""Evaluation tasks. Generative: gsm8k, ifeval (need a `Generator`). Multiple choice by log-likelihood:
arc_easy, arc_challenge, hellaswag (need a scorer `pairs -> log-likelihoods`)."""

GENERATIVE = ("gsm8k", "ifeval")
MULTIPLE_CHOICE = ("arc_easy", "arc_challenge", "hellaswag")
