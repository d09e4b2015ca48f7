"""Probing on the real models: alignment reproduces each model's own tokenization (MiniLM's WordPiece, SmolLM2's
BPE through a TransformerBridge), and word activations equal run_with_cache pooled by hand, padding included."""

from __future__ import annotations

import pytest
import torch

import circuitlab
from circuitlab.probing import activations, align, data
from circuitlab.probing.data import Sentence
from circuitlab.testing import need_real_model

pytestmark = pytest.mark.real

SENTENCES = data.template_sentences(25, seed=11) + [
    Sentence(("The", "unbelievable", "cafés", "weren't", "open", "."), space_after=(True,) * 4 + (False, True))]


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


def test_minilm_alignment_and_activations():
    need_real_model("minilm-l6")
    enc = circuitlab.load_encoder("minilm-l6")
    al = align.align(enc, SENTENCES)
    assert al.n_skipped == 0
    for s, toks in zip(SENTENCES, al.tokens):
        assert toks == enc.to_tokens(s.text)[0][0].tolist()  # [CLS] ... [SEP], as the model tokenizes
    strs = enc.tokenizer.convert_ids_to_tokens(al.tokens[-1])
    assert [[strs[t] for t in p] for p in al.pieces[-1]][:2] == [["the"], ["unbelievable"]]
    hooks = ["blocks.0.hook_resid_pre", "blocks.3.hook_resid_post"]
    acts = activations.collect(enc, SENTENCES, hooks, cache=False, progress=False)
    row = 0
    for k, (s, pieces) in enumerate(zip(SENTENCES, al.pieces)):
        tokens, types, mask = enc.to_tokens(s.text)
        _, cache = enc.run_with_cache(tokens, return_type=None, one_zero_attention_mask=mask)
        want = torch.stack([cache[hooks[1]][0, list(p)].mean(0) for p in pieces])
        torch.testing.assert_close(acts[hooks[1]][row:row + len(s)], want, atol=2e-4, rtol=1e-4)
        row += len(s)


@pytest.mark.slow
def test_smollm2_bridge_alignment_and_activations():
    need_real_model("smollm2-135m")
    smol = circuitlab.load_model("smollm2-135m")
    al = align.align(smol, SENTENCES)
    assert al.n_skipped == 0
    for s, toks in zip(SENTENCES, al.tokens):
        assert toks == smol.to_tokens(s.text)[0].tolist()
    acts = activations.collect(smol, SENTENCES[:6], [4], cache=False, progress=False)
    row = 0
    for s, pieces in zip(SENTENCES[:6], al.pieces):
        _, cache = smol.run_with_cache(smol.to_tokens(s.text))
        want = torch.stack([cache["blocks.4.hook_resid_post"][0, list(p)].mean(0) for p in pieces])
        torch.testing.assert_close(acts["blocks.4.hook_resid_post"][row:row + len(s)], want, atol=1e-3, rtol=1e-4)
        row += len(s)
