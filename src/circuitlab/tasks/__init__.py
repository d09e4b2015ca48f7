"""Prompt sets: token sequences with known structure, clean/corrupted pairs and answers."""

from circuitlab.tasks.copying import CopyTask, copy_task
from circuitlab.tasks.repeated import RepeatedTokens, repeated_tokens

__all__ = ["CopyTask", "RepeatedTokens", "copy_task", "repeated_tokens"]
