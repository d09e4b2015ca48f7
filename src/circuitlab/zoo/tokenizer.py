"""The zoo's tokenizers, as the Hugging Face fast tokenizers ``HookedTransformer`` expects.

- :func:`word_level_tokenizer`: ``"<bos> t0 t1 ..."``, one id per word, for the synthetic attention-only models;
- :func:`train_tokenizer`: a byte-level BPE trained on a recipe's text, GPT-2 conventions, for ``zoo/toy-lm``.
"""

from __future__ import annotations

from typing import Iterable

from circuitlab.errors import CircuitlabError

EOT = "<|endoftext|>"  # the BPE tokenizer's BOS, end of text and padding: id 0


def word_level_tokenizer(n_words: int, prefix: str = "t", bos: str = "<bos>"):
    """A Hugging Face fast tokenizer with vocabulary ``{bos: 0, "t0": 1, ..., f"t{n_words-1}": n_words}``.

    Text is split on whitespace; ``"t3 t17"`` encodes to ``[4, 18]`` (plus BOS when asked for). Decoding joins
    words with spaces. BOS doubles as end-of-text and padding.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {bos: 0, **{f"{prefix}{i}": i + 1 for i in range(n_words)}}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=bos))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with single spaces
    return PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token=bos, eos_token=bos, pad_token=bos, unk_token=bos,
        model_max_length=10**6, add_bos_token=True, name_or_path=f"circuitlab-word-level-{n_words}",
    )


def train_tokenizer(texts: Iterable[str], vocab_size: int, name: str = "circuitlab-toy-lm-bpe"):
    """A byte-level BPE tokenizer (GPT-2 conventions: a word's leading space belongs to it) as a HF fast tokenizer.

    Id 0 is ``<|endoftext|>``, used as BOS, end of text and padding. ``add_bos_token=True`` is recorded in the
    tokenizer's init kwargs, which is what TransformerLens's ``get_tokenizer_with_bos`` checks before it would
    otherwise reload the tokenizer with ``AutoTokenizer.from_pretrained(name_or_path)``. (transformers 5 does not
    save that flag, so :func:`circuitlab.models.io.load_tokenizer` passes it again on load.)
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOT], min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    core.train_from_iterator(texts, trainer)
    return wrap_tokenizer(core, name)


def wrap_tokenizer(core, name: str = "circuitlab-toy-lm-bpe"):
    """A ``tokenizers.Tokenizer`` as the ``PreTrainedTokenizerFast`` that HookedTransformer expects."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token=EOT, eos_token=EOT, pad_token=EOT, unk_token=EOT,
        model_max_length=10**6, add_bos_token=True, name_or_path=name,
    )


def single_token_id(tokenizer, text: str) -> int:
    """The id of ``text`` (e.g. ``" Mary"``), which must be exactly one token."""
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) != 1:
        raise CircuitlabError(
            f"{text!r} is {len(ids)} tokens in this tokenizer ({tokenizer.convert_ids_to_tokens(ids)}); the toy-lm "
            "answers must be single tokens. Give the recipe a larger vocab_size or more synthetic lines."
        )
    return ids[0]
