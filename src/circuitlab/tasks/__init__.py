"""Prompt sets: token sequences with known structure, clean/corrupted pairs and answers."""

from circuitlab.tasks.repeated import RepeatedTokens, repeated_tokens

__all__ = ["RepeatedTokens", "repeated_tokens"]
