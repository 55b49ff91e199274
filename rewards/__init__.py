"""Verifiable rewards: verifiers, their registry, and adapters for other trainers.

Importable without torch or Ray. The verifier contract lives in `rewards.base`, the registry in
`rewards.registry`.
"""

from rewards.base import Score, Verifier
from rewards.registry import get_verifier, known_verifiers, register

__all__ = ["Score", "Verifier", "get_verifier", "known_verifiers", "register"]
