"""The activation collector (circuitlab.engine.collect), checked against TransformerLens's own cache: spans pooled
by hand, batch plans written out by hand, the stop layer seen from a hook that must not fire, and a disk cache
that notices replaced weights."""

from __future__ import annotations

import pytest
import torch
from transformer_lens import HookedTransformer

import circuitlab
from circuitlab.engine import collect as C
from circuitlab.errors import InputError
from circuitlab.probing import activations, data


@pytest.fixture(scope="module")
def toy():
    return circuitlab.load_model("zoo/toy-lm")


def test_rows_are_span_means_of_run_with_cache(toy):
    texts = ["The cat sat on the mat.", "A dog ran home", "Mary gave John a book and a pen."]
    tokens = [toy.to_tokens(t)[0].tolist() for t in texts]
    # any spans: the last token, everything but BOS, two tokens out of order, one token twice over
    spans = [[[len(tokens[0]) - 1], list(range(1, len(tokens[0])))], [[3, 1]], [[2], [2], [1, 2, 3, 4]]]
    hooks = ["blocks.0.hook_resid_pre", "blocks.1.attn.hook_z", "blocks.2.mlp.hook_post"]
    rows = C.collect_rows(toy, tokens, spans, hooks, max_memory=20_000)
    for dtype in (torch.float32, torch.float64):
        again = C.collect_rows(toy, tokens, spans, hooks, batches=[[2, 0, 1]], dtype=dtype, accumulate=dtype)
        assert again[hooks[0]].dtype == dtype
        for h in hooks:
            torch.testing.assert_close(again[h].float(), rows[h], atol=2e-5, rtol=1e-4)
    r = 0
    for toks, sp in zip(tokens, spans):
        _, cache = toy.run_with_cache(torch.tensor([toks]))
        for span in sp:
            for h in hooks:
                act = cache[h][0].reshape(len(toks), -1)
                torch.testing.assert_close(rows[h][r], act[span].mean(0), atol=2e-5, rtol=1e-4)
            r += 1
    assert rows[hooks[0]].shape[0] == r == 6
    assert rows["blocks.1.attn.hook_z"].shape[1] == toy.cfg.n_heads * toy.cfg.d_head


def test_batch_plans():
    per_row = lambda n: 10 * n  # noqa: E731
    # longest first; a batch holds rows while (rows + 1) * bytes(longest) fits
    assert C.batches_by_length([3, 5, 1, 5, 2], per_row, 100) == [[1, 3], [0, 4, 2]]
    assert C.batches_by_length([3, 5, 1, 5, 2], per_row, 1000, batch_size=2) == [[1, 3], [0, 4], [2]]
    assert C.batches_by_length([3, 5, 1, 5, 2], per_row, 1000) == [[1, 3, 0, 4, 2]]
    # consecutive rows of one length only
    assert C.same_length_runs([4, 4, 4, 2, 4], per_row, 80) == [[0, 1], [2], [3], [4]]
    # arrival order, lazily: a batch goes when the next item would not fit, or when it is full
    seen = []

    def items():
        for n in [2, 3, 6, 1, 1, 1]:
            seen.append(n)
            yield n

    stream = C.stream_batches(items(), lambda n: n, per_row, 110, batch_size=2)
    assert next(stream) == [2, 3] and seen == [2, 3]
    assert list(stream) == [[6], [1, 1], [1]]


def test_the_stop_layer_runs_no_later_block(toy):
    assert C.stop_layer(toy, ["blocks.1.hook_resid_post", "blocks.0.attn.hook_z"]) == 2
    assert C.stop_layer(toy, ["hook_embed"]) == 0
    assert C.stop_layer(toy, ["blocks.0.hook_resid_pre", "ln_final.hook_normalized"]) is None
    fired = []
    tokens = toy.to_tokens("The cat sat")[0].tolist()
    toy.add_hook("blocks.2.hook_resid_pre", lambda act, hook: fired.append(hook.name), is_permanent=True)
    try:
        C.collect_rows(toy, [tokens], [[[1]]], ["blocks.1.hook_resid_post"])
        assert fired == []
        C.collect_rows(toy, [tokens], [[[1]]], ["blocks.2.hook_resid_post"])
        assert fired == ["blocks.2.hook_resid_pre"]
    finally:
        toy.reset_hooks(including_permanent=True)


def test_stream_activations_reads_each_batch_padded(toy):
    rows = [toy.to_tokens(t)[0] for t in ["The cat sat on the mat.", "A dog", "Mary gave John a book"]]
    got = list(C.stream_activations(toy, rows, "blocks.1.mlp.hook_post", lambda act: act[..., 7].float(),
                                    batch_size=2))
    assert [len(b) for b, _, _ in got] == [2, 1]
    for batch, toks, kept in got:
        for i, r in enumerate(batch):
            assert torch.equal(toks[i, :len(r)], r) and not toks[i, len(r):].any()
            _, cache = toy.run_with_cache(r[None])
            torch.testing.assert_close(kept[i, :len(r)], cache["blocks.1.mlp.hook_post"][0, :, 7], atol=1e-5,
                                       rtol=1e-4)


def test_checks_name_the_argument(toy):
    assert C.check_hooks(toy, None) == C.default_hooks(toy)
    assert C.check_hooks(toy, None, ["blocks.1.hook_resid_post"]) == ["blocks.1.hook_resid_post"]
    assert C.check_hooks(toy, [-1, "blocks.0.hook_mlp_out"]) == [f"blocks.{toy.cfg.n_layers - 1}.hook_resid_post",
                                                                 "blocks.0.hook_mlp_out"]
    for bad, words in [([], "non-empty"), (["blocks.0.hook_nothing"], "no hook"), ([1, 1], "twice"),
                       (["blocks.0.attn.hook_pattern"], "attention patterns"), ([2.5], "neither")]:
        with pytest.raises(InputError, match=words):
            C.check_hooks(toy, bad)
    assert C.check_pool("first", {"mean": "all", "first": "the first"}) == "first"
    with pytest.raises(InputError, match=r"pool='max': use 'mean' \(all\) or 'first' \(the first\)\."):
        C.check_pool("max", {"mean": "all", "first": "the first"})


def test_the_cache_notices_replaced_weight_data(toy, tmp_path):
    model = HookedTransformer(toy.cfg)
    model.load_state_dict(toy.state_dict())
    model.set_tokenizer(toy.tokenizer)
    sents = data.template_sentences(6, seed=2)
    first = activations.collect(model, sents, [2], cache=tmp_path, progress=False)
    assert activations.collect(model, sents, [2], cache=tmp_path, progress=False).meta["computed"] == []
    W = model.blocks[1].mlp.W_in
    version = W._version
    W.data = W.data * 1.5  # the same Parameter, its data replaced: no version counter moves
    assert W._version == version
    again = activations.collect(model, sents, [2], cache=tmp_path, progress=False)
    assert again.meta["computed"] == ["blocks.2.hook_resid_post"]
    assert not torch.allclose(again["blocks.2.hook_resid_post"], first["blocks.2.hook_resid_post"])
    model.load_state_dict(toy.state_dict())  # the first weights again, copied in place: the first file serves
    assert activations.collect(model, sents, [2], cache=tmp_path, progress=False).meta["computed"] == []


def test_a_bridge_stops_after_the_last_block_read_with_the_same_rows():
    from circuitlab.testing import random_bridge

    bridge, _ = random_bridge("gpt2", n_layers=3)
    tokens = torch.randint(0, 50, (2, 7))
    hooks = ["blocks.0.hook_resid_post", "blocks.1.attn.hook_z"]
    assert C.stop_layer(bridge, hooks) == 2
    got, fired = {}, []
    fwd = [(h, (lambda act, hook, _h=h: got.__setitem__(_h, act.detach()))) for h in hooks]
    bridge.run_with_hooks(tokens, fwd_hooks=fwd, return_type=None)  # the whole model
    rows = C.collect_rows(bridge, tokens.tolist(), [[[1, 2], [6]]] * 2, hooks)
    for h in hooks:
        act = got[h].reshape(2, 7, -1)
        want = torch.stack([act[0, [1, 2]].mean(0), act[0, 6], act[1, [1, 2]].mean(0), act[1, 6]])
        torch.testing.assert_close(rows[h], want, atol=1e-6, rtol=1e-5)
    bridge.run_with_hooks(tokens, fwd_hooks=fwd + [("blocks.2.hook_resid_pre", lambda act, hook: fired.append(1))],
                          stop_at_layer=C.stop_layer(bridge, hooks))
    assert fired == []
