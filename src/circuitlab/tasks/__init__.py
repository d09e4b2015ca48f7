"""Prompt sets: token sequences with known structure, clean/corrupted pairs and answers."""

from circuitlab.tasks.copying import CopyTask, copy_task
from circuitlab.tasks.factual import FACTS, Fact, known_facts, known_facts_report, toy_facts
from circuitlab.tasks.facts import World, fact_sentence, ioi_sentence, load_world, make_world
from circuitlab.tasks.repeated import RepeatedTokens, repeated_tokens

__all__ = ["CopyTask", "FACTS", "Fact", "RepeatedTokens", "World", "copy_task", "fact_sentence", "ioi_sentence",
           "known_facts", "known_facts_report", "load_world", "make_world", "repeated_tokens", "toy_facts"]
