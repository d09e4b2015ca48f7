"""Labelled sentences for probing: kept importable from here; the data lives in :mod:`circuitlab.tasks.sentences`.

Every name below is :mod:`circuitlab.tasks.sentences`'s (the :class:`Sentence` type, CoNLL-U reading and writing,
spaCy labelling, the template grammar and the default offline data): task data sits in ``tasks/``, below the
analyses that read it.
"""

from circuitlab.tasks.sentences import (DEFAULT_DATA_FORMAT, LAYERS, MULTIWORD, PUNCT_UPOS, SPACY_INSTALL,
                                        SPACY_PACKAGE, Sentence, check_tree, debian_corpus_lines, data_hash,
                                        default_sentences, label_text, read_conllu, spacy_pipeline,
                                        template_sentences, write_conllu)

__all__ = ["DEFAULT_DATA_FORMAT", "LAYERS", "MULTIWORD", "PUNCT_UPOS", "SPACY_INSTALL", "SPACY_PACKAGE", "Sentence",
           "check_tree", "debian_corpus_lines", "data_hash", "default_sentences", "label_text", "read_conllu",
           "spacy_pipeline", "template_sentences", "write_conllu"]
