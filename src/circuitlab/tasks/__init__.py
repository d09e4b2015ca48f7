"""Task data: every prompt set and data set the analyses and the reproductions use, one file per kind.

- :mod:`~circuitlab.tasks.repeated`: repeated random token sequences (induction), for a vocabulary or a model, and
  the induction task (clean / corrupted sequences and their metric);
- :mod:`~circuitlab.tasks.copying`: induction-style copying, clean / corrupted prompt pairs that differ at one token;
- :mod:`~circuitlab.tasks.ioi`: indirect object identification prompts with their ABC corruptions;
- :mod:`~circuitlab.tasks.factual`: facts about the real world for causal tracing, and which ones a model knows;
- :mod:`~circuitlab.tasks.toy_world`: the synthetic world of invented people ``zoo/toy-lm`` learns (its facts and
  its indirect-object sentences);
- :mod:`~circuitlab.tasks.sentences`: labelled sentences (words, UPOS, trees, entities) from CoNLL-U, spaCy, a
  grammar, and the default offline corpus;
- :mod:`~circuitlab.tasks.minimal_pairs`: grammatical / ungrammatical sentence pairs (templates, BLiMP's files);
- :mod:`~circuitlab.tasks.reviews`: template sentiment reviews, TCAV concept and random texts, and reviews signed by
  a shortcut name.

Tasks sit below the analyses: they import only ``errors``, ``results``, ``core`` and ``models``.
"""

from circuitlab.tasks.copying import CopyTask, copy_task
from circuitlab.tasks.factual import FACTS, Fact, known_facts, known_facts_report, toy_facts
from circuitlab.tasks.ioi import ioi_groups, ioi_prompts
from circuitlab.tasks.minimal_pairs import MinimalPair, read_blimp, template_pairs
from circuitlab.tasks.repeated import RepeatedTokens, induction_task, repeated_sequences, repeated_tokens
from circuitlab.tasks.reviews import concept_texts, random_texts, reviews, shortcut_reviews
from circuitlab.tasks.sentences import Sentence, default_sentences, read_conllu, template_sentences
from circuitlab.tasks.toy_world import World, fact_sentence, ioi_sentence, load_world, make_world

__all__ = ["CopyTask", "FACTS", "Fact", "MinimalPair", "RepeatedTokens", "Sentence", "World", "concept_texts",
           "copy_task", "default_sentences", "fact_sentence", "induction_task", "ioi_groups", "ioi_prompts",
           "ioi_sentence", "known_facts", "known_facts_report", "load_world", "make_world", "random_texts",
           "read_blimp", "read_conllu", "repeated_sequences", "repeated_tokens", "reviews", "shortcut_reviews",
           "template_pairs", "template_sentences", "toy_facts"]
