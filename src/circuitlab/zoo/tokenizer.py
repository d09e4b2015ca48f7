"""A tiny word-level tokenizer for the synthetic zoo models: ``"<bos> t0 t1 ..."``, one id per word."""

from __future__ import annotations


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
