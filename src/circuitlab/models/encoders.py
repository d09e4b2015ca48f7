"""Encoders: BERT-style sentence encoders as TransformerLens ``HookedEncoder``s.

A sentence encoder such as all-MiniLM-L6-v2 ships without a masked-LM head, so it has no logits. Its
:class:`SentenceEncoder` returns the final hidden states from ``forward`` (what Hugging Face's ``BertModel``
calls ``last_hidden_state``) and raises a :class:`~circuitlab.CircuitlabError` if asked for logits, instead of
returning numbers from an untrained head. Every hook point of ``HookedEncoder`` is there for analyses.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float, Int
from transformer_lens import HookedEncoder, HookedTransformerConfig

from circuitlab.core import read_json_file, shorten
from circuitlab.errors import CircuitlabError, InputError

#: heads whose weights a sentence encoder does not have; they are zeroed and never used
_ABSENT_HEADS = ("mlm_head.", "unembed.", "nsp_head.")


class SentenceEncoder(HookedEncoder):
    """A ``HookedEncoder`` without a masked-LM head: ``forward`` returns the final hidden states."""

    def forward(  # type: ignore[override]
        self,
        input: Any,
        return_type: str | None = "hidden",
        token_type_ids: Int[torch.Tensor, "batch pos"] | None = None,
        one_zero_attention_mask: Int[torch.Tensor, "batch pos"] | None = None,
    ) -> Float[torch.Tensor, "batch pos d_model"] | None:
        if return_type in ("logits", "predictions"):
            raise CircuitlabError(
                f"{self.cfg.model_name} is a sentence encoder with no masked-LM head, so it has no "
                f"{return_type}. Use return_type='hidden' (the default: final hidden states), return_type=None "
                "with hooks or run_with_cache, or circuitlab.models.encoders.embed_sentences for sentence "
                "embeddings."
            )
        if return_type not in ("hidden", None):
            raise InputError(f"return_type={shorten(return_type)}: use 'hidden' or None.")
        if isinstance(input, (str, list)):
            if self.tokenizer is None:
                raise InputError("text input needs a tokenizer; pass token ids instead.")
            tokens, types, mask = self.to_tokens(input)
            token_type_ids = types if token_type_ids is None else token_type_ids
            one_zero_attention_mask = mask if one_zero_attention_mask is None else one_zero_attention_mask
        else:
            tokens = input
        hidden = self.encoder_output(tokens, token_type_ids, one_zero_attention_mask)
        return hidden if return_type == "hidden" else None


def bert_config(hf_config: dict[str, Any], name: str, device: str | None = None) -> HookedTransformerConfig:
    """TransformerLens's config for a BERT encoder, from the Hugging Face ``config.json`` fields.

    The same fields TransformerLens's own loader reads for ``BertForMaskedLM``; built here because its loader
    fetches the config from the hub.
    """
    if hf_config.get("hidden_act", "gelu") != "gelu" or hf_config.get("position_embedding_type",
                                                                        "absolute") != "absolute":
        raise CircuitlabError(
            f"{name}: only BERT encoders with gelu and absolute positions are supported "
            f"(got {shorten(hf_config.get('hidden_act'))}, {shorten(hf_config.get('position_embedding_type'))})."
        )
    return HookedTransformerConfig(
        d_model=hf_config["hidden_size"],
        d_head=hf_config["hidden_size"] // hf_config["num_attention_heads"],
        n_heads=hf_config["num_attention_heads"],
        d_mlp=hf_config["intermediate_size"],
        n_layers=hf_config["num_hidden_layers"],
        n_ctx=hf_config["max_position_embeddings"],
        eps=hf_config["layer_norm_eps"],
        d_vocab=hf_config["vocab_size"],
        act_fn="gelu",
        attention_dir="bidirectional",
        original_architecture="BertForMaskedLM",
        model_name=name,
        dtype=torch.float32,
        device=device or "cpu",
    )


def load_bert_sentence_encoder(path: str | Path, device: str | None = None, name: str = "minilm-l6"):
    """A :class:`SentenceEncoder` from a Hugging Face BERT folder (``config.json``, safetensors, tokenizer)."""
    from transformers import AutoTokenizer, BertConfig, BertForPreTraining, BertModel
    from transformer_lens.pretrained.weight_conversions.bert import convert_bert_weights

    path = Path(path)
    hf_config = read_json_file(path / "config.json", "encoder config")
    cfg = bert_config(hf_config, name, device)
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    bert = BertModel.from_pretrained(str(path), dtype=torch.float32)
    # TransformerLens converts a BertForPreTraining-shaped model; give it our encoder and stand-in heads,
    # whose weights are then replaced by zeros (they are never used: SentenceEncoder has no logits).
    shell = BertForPreTraining(BertConfig(**{k: v for k, v in hf_config.items() if not k.startswith("_")}))
    shell.bert = bert
    state = convert_bert_weights(shell, cfg)
    state = {
        k: (torch.zeros_like(v) if k.startswith(_ABSENT_HEADS) else v).detach().clone() for k, v in state.items()
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        model = SentenceEncoder(cfg, tokenizer=tokenizer, move_to_device=False)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith((".mask", ".IGNORE"))]  # buffers the model builds itself
    if missing or unexpected:
        raise CircuitlabError(f"{name}: weights do not fit the config: missing {missing[:5]}, unexpected "
                              f"{unexpected[:5]}.")
    model.to(cfg.device, print_details=False)
    model.eval()
    return model


def embed_sentences(model: HookedEncoder, texts: list[str] | str) -> Float[torch.Tensor, "n_texts d_model"]:
    """Sentence embeddings as sentence-transformers makes them for all-MiniLM-L6-v2: the mean of the final
    hidden states over the real (non-padding) tokens, scaled to unit length. Shape ``[n_texts, d_model]``."""
    if isinstance(texts, str):
        texts = [texts]
    if not texts:
        raise InputError("texts is empty: give at least one sentence.")
    tokens, types, mask = model.to_tokens(texts)
    with torch.no_grad():
        hidden = model.encoder_output(tokens, types, mask)
    weights = mask.to(hidden.dtype).unsqueeze(-1)
    pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, dim=-1)
