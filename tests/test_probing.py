"""Probing foundations: CoNLL-U reading and its errors, template and spaCy labels, word-to-token alignment on
byte-level BPE and WordPiece, and word activations (batched against one-at-a-time and against run_with_cache
pooled by hand, encoder masks, the on-disk cache)."""

from __future__ import annotations

import pytest
import torch
from transformer_lens import HookedEncoder, HookedTransformer, HookedTransformerConfig

import circuitlab
from circuitlab.errors import InputError
from circuitlab.probing import activations, align, data
from circuitlab.probing.data import Sentence
from circuitlab.tasks import sentences

CONLLU = """# sent_id = s1
# text = The cat sat.
1\tThe\tthe\tDET\tDT\t_\t2\tdet\t_\t_
2\tcat\tcat\tNOUN\tNN\t_\t3\tnsubj\t_\t_
3\tsat\tsit\tVERB\tVBD\t_\t0\troot\t_\tSpaceAfter=No
4\t.\t.\tPUNCT\t.\t_\t3\tpunct\t_\t_

# sent_id = s2
1\tDogs\tdog\tNOUN\tNNS\t_\t2\tnsubj\t_\t_
1.1\tbark\tbark\tVERB\t_\t_\t_\t_\t0:root\t_
2\tbark\tbark\tVERB\tVBP\t_\t0\troot\t_\t_
"""


@pytest.fixture(scope="module")
def toy():
    torch.set_num_threads(1)
    return circuitlab.load_model("zoo/toy-lm")


# ---------------------------------------------------------------------------------------------------------
# CoNLL-U
# ---------------------------------------------------------------------------------------------------------

def test_read_conllu_reads_words_tags_trees_and_spacing(tmp_path):
    path = tmp_path / "tiny.conllu"
    path.write_text(CONLLU)
    for source in (CONLLU, path):
        s1, s2 = data.read_conllu(source)
        assert s1.words == ("The", "cat", "sat", ".") and s1.id == "s1"
        assert s1.upos == ("DET", "NOUN", "VERB", "PUNCT")
        assert s1.head == (2, 3, 0, 3) and s1.deprel == ("det", "nsubj", "root", "punct")
        assert s1.text == "The cat sat." and s1.word_spans() == [(0, 3), (4, 7), (8, 11), (11, 12)]
        assert s2.words == ("Dogs", "bark") and s2.head == (2, 0)  # the empty node 1.1 is not a word
        assert s1.ent is None


def _break(line_no: int, new: str) -> str:
    lines = CONLLU.splitlines()
    lines[line_no - 1] = new
    return "\n".join(lines) + "\n"


def test_read_conllu_quotes_a_huge_field_shortened():
    """A megabyte-long HEAD field: an InputError of a line's length naming the line (it was a raw ValueError from
    int() on a million digits)."""
    bad = CONLLU.replace("\t3\tnsubj", "\t" + "9" * 1_000_000 + "\tnsubj", 1)
    with pytest.raises(InputError, match=r"line 4: HEAD '9{79}\.\.\. \(1,000,002 characters\) is not a word") as err:
        data.read_conllu(bad)
    assert len(str(err.value)) < 300


def test_read_conllu_files_in_other_encodings_and_with_a_byte_order_mark(tmp_path):
    """A UTF-8 file with a BOM reads as without one; a Latin-1 file is an InputError naming the file, the line and
    the column of the first non-UTF-8 byte (not a raw UnicodeDecodeError)."""
    # an accented word in line 2 of the file (its "# text = " comment), column 12
    text = CONLLU.replace("The", "Th\u00e9", 1)
    bom = tmp_path / "bom.conllu"
    bom.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    assert data.read_conllu(bom) == data.read_conllu(text)
    latin = tmp_path / "latin.conllu"
    latin.write_bytes(text.encode("latin-1"))
    with pytest.raises(InputError, match=r"latin\.conllu' is not UTF-8: line 2, column 12 holds byte 0xe9"):
        data.read_conllu(latin)


@pytest.mark.parametrize("line_no, new, words", [  # line 3 is "The", line 4 "cat"
    (4, "2-3\tcatsat\t_\t_\t_\t_\t_\t_\t_\t_", "multiword token"),
    (4, "2\tcat\tcat\tNOUN\tNN\t_\t3\tnsubj\t_", "9 tab-separated fields"),
    (4, "2\tcat\tcat\tNOUN\tNN\t_\t9\tnsubj\t_\t_", "HEAD '9'"),
    (4, "2\tcat\tcat\tNOUN\tNN\t_\t_\tnsubj\t_\t_", "HEAD is '_' here"),
    (4, "2\tcat\tcat\tNOUN\tNN\t_\t1\tnsubj\t_\t_", "cycle"),
    (4, "2\tcat\tcat\tNOUN\tNN\t_\t0\tnsubj\t_\t_", "exactly one root"),
    (4, "3\tcat\tcat\tNOUN\tNN\t_\t3\tnsubj\t_\t_", "where 2 was expected"),
    (4, "2\tca t\tcat\tNOUN\tNN\t_\t3\tnsubj\t_\t_", "holds whitespace"),
])
def test_read_conllu_errors_name_the_line(line_no, new, words):
    with pytest.raises(InputError) as err:
        data.read_conllu(_break(line_no, new))
    assert words in str(err.value)
    # the line: the broken row itself, or (tree errors) the sentence's first row, line 3
    assert (f"line {line_no}:" in str(err.value)
            or words in ("cycle", "exactly one root", "holds whitespace") and "line 3:" in str(err.value))


MWT = """# sent_id = m1
1\tI\tI\tPRON\tPRP\t_\t3\tnsubj\t_\t_
2-3\tdon't\t_\t_\t_\t_\t_\t_\t_\t_
2\tdo\tdo\tAUX\tVBP\t_\t4\taux\t_\t_
3\tn't\tnot\tPART\tRB\t_\t4\tadvmod\t_\t_
4\tknow\tknow\tVERB\tVB\t_\t0\troot\t_\tSpaceAfter=No
5\t.\t.\tPUNCT\t.\t_\t4\tpunct\t_\t_

# sent_id = m2
1\tGo\tgo\tVERB\tVB\t_\t0\troot\t_\t_
2-3\tdu\t_\t_\t_\t_\t_\t_\t_\tSpaceAfter=No
2\tde\tde\tADP\t_\t_\t4\tcase\t_\t_
3\tle\tle\tDET\t_\t_\t4\tdet\t_\t_
4\tpain\tpain\tNOUN\t_\t_\t1\tobl\t_\t_
"""


def test_read_conllu_multiword_tokens_error_by_default_and_split_on_request():
    # the syntactic words carry the annotation (as in the file); a two-part token that spells its surface form is
    # read as that form (`I don't know.`), one that does not (`du` = `de` + `le`) with spaces, and a warning says so
    with pytest.raises(InputError, match="line 3: multiword token 2-3 .*multiword='split'"):
        data.read_conllu(MWT)
    with pytest.warns(UserWarning, match="1 of 2 multiword tokens .*'du' = 'de' \\+ 'le'"):
        m1, m2 = data.read_conllu(MWT, multiword="split")
    assert m1.words == ("I", "do", "n't", "know", ".") and m1.head == (3, 4, 4, 0, 4)
    assert m1.upos == ("PRON", "AUX", "PART", "VERB", "PUNCT") and m1.text == "I don't know."
    assert m1.word_spans() == [(0, 1), (2, 4), (4, 7), (8, 12), (12, 13)]
    assert m2.words == ("Go", "de", "le", "pain") and m2.text == "Go de lepain"  # the range's SpaceAfter=No kept
    with pytest.raises(InputError, match="multiword must be one of"):
        data.read_conllu(MWT, multiword="merge")


@pytest.mark.parametrize("bad, words", [
    ("2-3\tdon't", "2-7\tdon't"),   # a range past the sentence's words
    ("2-3\tdon't", "3-4\tdon't"),   # a range that does not start at the next word
])
def test_read_conllu_bad_multiword_ranges_name_the_line(bad, words):
    with pytest.raises(InputError, match="line 3: multiword token"):
        data.read_conllu(MWT.replace(bad, words), multiword="split")


def test_split_multiword_tokens_align_to_the_model_s_tokens(toy):
    # the model reads "I don't know." as BOS, I, " don", "'t", " know", "."; " don" goes to `do` (two of its
    # three characters), "'t" to `n't`: each syntactic word keeps a token of its own
    (m1,) = data.read_conllu(MWT.split("\n\n")[0] + "\n", multiword="split")
    al = align.align(toy, [m1])
    assert [toy.tokenizer.decode([t]) for t in al.tokens[0][1:]] == ["I", " don", "'t", " know", "."]
    assert al.pieces == [[(1,), (2,), (3,), (4,), (5,)]] and al.n_skipped == 0


def test_conllu_round_trip_keeps_everything(tmp_path):
    sents = data.template_sentences(30, seed=4)
    back = sentences._read_cached_conllu(data.write_conllu(sents))
    assert back == sents  # words, tags, heads, labels, entities, spacing (ids are not compared)


def test_sentence_rejects_bad_input():
    with pytest.raises(InputError, match="no words"):
        Sentence(())
    with pytest.raises(InputError, match="whitespace"):
        Sentence(("a b",))
    with pytest.raises(InputError, match="2 upos values for 3 words"):
        Sentence(("a", "b", "c"), upos=("X", "Y"))
    with pytest.raises(InputError, match="cycle"):
        Sentence(("a", "b", "c"), head=(0, 3, 2))
    with pytest.raises(InputError, match="no 'deprel' labels"):
        Sentence(("a",)).labels("deprel")


# ---------------------------------------------------------------------------------------------------------
# Template sentences and spaCy
# ---------------------------------------------------------------------------------------------------------

def test_template_sentences_have_the_grammar_s_trees():
    sents = data.template_sentences(300, seed=2)
    assert sents == data.template_sentences(300, seed=2) and sents != data.template_sentences(300, seed=3)
    for s in sents:
        root = s.head.index(0)
        assert s.upos[root] in ("VERB", "ADJ") and s.deprel[root] == "root"
        assert s.words[-1] == "." and s.head[-1] == root + 1 and s.text.endswith(" .") is False
        for i, (u, h, d) in enumerate(zip(s.upos, s.head, s.deprel)):
            if u == "DET":
                assert d == "det" and s.upos[h - 1] == "NOUN" and h > i + 1  # a determiner precedes its noun
            if u == "ADP":
                assert d == "case" and s.upos[h - 1] in ("NOUN", "PROPN")
            if s.ent[i] != "O":
                assert u == "PROPN" and s.ent[i] in ("PERSON", "GPE")
    assert {d for s in sents for d in s.deprel} >= {"nsubj", "obj", "obl", "case", "det", "amod", "cop", "advmod"}


def test_spacy_labels_agree_with_the_templates_gold_tags():
    pytest.importorskip(data.SPACY_PACKAGE)
    gold = data.template_sentences(120, seed=5)
    tagged = data.label_text([s.text for s in gold])
    assert [s.words for s in tagged] == [s.words for s in gold]
    pairs = [(a, b) for g, t in zip(gold, tagged) for a, b in zip(g.upos, t.upos)]
    assert sum(a == b for a, b in pairs) / len(pairs) > 0.95  # spaCy tags these easy sentences almost perfectly
    two = data.label_text("The old man gave his daughter a red book in Paris.  She  read it.")
    assert [s.words[0] for s in two] == ["The", "She"]  # one text, two sentences
    first = two[0]
    assert first.upos[first.words.index("man")] == "NOUN" and first.ent[first.words.index("Paris")] == "GPE"
    assert first.words[first.head.index(0)] == "gave" and first.space_after[-2] is False


def test_default_data_from_debian_corpora_is_labelled_and_cached(tmp_path, monkeypatch):
    from circuitlab.zoo import text_data

    pytest.importorskip(data.SPACY_PACKAGE)
    try:
        text_data.require_corpora()
    except text_data.CorpusMissingError:
        pytest.skip("the Debian corpora (bible-kjv, fortunes) are not installed")
    monkeypatch.setenv("CIRCUITLAB_CACHE", str(tmp_path))
    sents = data.default_sentences(40, seed=3, source="debian", progress=False)
    assert len(sents) == 40 and len({s.text for s in sents}) == 40
    kinds = {s.id.rstrip("0123456789") for s in sents}
    assert kinds == {"kjv", "fortune"}
    for s in sents:
        assert 5 <= len(s.text.split()) <= 40 and s.text[-1] in ".!?" and s.upos and s.head and s.ent
    files = list((tmp_path / "probing" / "data").glob("*.conllu"))
    assert len(files) == 1
    assert data.default_sentences(40, seed=3, source="debian", progress=False) == sents  # read back from the file
    assert data.default_sentences(40, seed=4, source="debian", progress=False) != sents


def test_default_data_falls_back_to_templates_with_a_warning(monkeypatch):
    from circuitlab.zoo import text_data

    def missing():
        raise text_data.CorpusMissingError("missing packages: bible-kjv")

    monkeypatch.setattr(text_data, "require_corpora", missing)
    with pytest.warns(UserWarning, match="falling back to template sentences"):
        sents = data.default_sentences(25, seed=1)
    assert sents == data.template_sentences(25, seed=1)
    assert data.default_sentences(25, seed=1, source="templates") == sents
    with pytest.raises(InputError, match="source="):
        data.default_sentences(25, source="wikipedia")


# ---------------------------------------------------------------------------------------------------------
# Alignment
# ---------------------------------------------------------------------------------------------------------

def test_alignment_on_byte_level_bpe_spells_every_word(toy):
    sents = data.template_sentences(60, seed=1) + [
        Sentence(("I", "don't", "like", "unbelievable", "cafés", "."), space_after=(True,) * 4 + (False, True)),
        Sentence(("do", "n't", "go"), space_after=(False, True, True))]
    al = align.align(toy, sents)
    assert al.n_skipped == 0
    for s, toks, pieces in zip(sents, al.tokens, al.pieces):
        assert toks == toy.to_tokens(s.text)[0].tolist()  # the model's own tokenization, BOS included
        joined = []
        for w, p in zip(s.words, pieces):
            assert list(p) == list(range(p[0], p[-1] + 1))  # a word's tokens are contiguous
            joined += p
            if s.words != ("do", "n't", "go"):
                assert toy.tokenizer.decode([toks[t] for t in p]).strip() == w
        assert joined == list(range(1, len(toks)))  # every token but BOS belongs to exactly one word
    # "don" is one token over the words "do" and "n't": it goes to "do" (two of its three letters)
    last = al.pieces[-1]
    assert toy.tokenizer.decode([al.tokens[-1][t] for t in last[0]]) == "don"


def wordpiece_encoder(n_layers: int = 2, n_ctx: int = 32, seed: int = 0) -> HookedEncoder:
    """A tiny random BERT encoder with a hand-made WordPiece vocabulary (offline, fast)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["the", "cat", "sat", "on", "mat", "a", "dog", "ran", ".", "un", "##believ", "##able", "story"]
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]"] + words)}
    core = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]"))
    core.normalizer = normalizers.BertNormalizer(lowercase=True)
    core.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                  sep_token="[SEP]")
    cfg = HookedTransformerConfig(n_layers=n_layers, d_model=16, n_heads=2, d_head=8, d_mlp=32, n_ctx=n_ctx,
                                  d_vocab=len(vocab), act_fn="gelu", attention_dir="bidirectional",
                                  original_architecture="BertForMaskedLM", model_name="tiny-bert", seed=seed,
                                  device="cpu")
    model = HookedEncoder(cfg, tokenizer=tok, move_to_device=False)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # HookedEncoder leaves its weights uninitialised
        for name, p in model.named_parameters():
            scale = 0.1 if name.split(".")[-1].startswith("b") else 0.3
            p.copy_((1.0 if name.endswith(".w") else 0.0) + scale * torch.randn(p.shape, generator=gen))
    model.eval()
    return model


def test_alignment_on_wordpiece_with_cls_sep_and_unknown_words():
    enc = wordpiece_encoder()
    sents = [Sentence(("The", "unbelievable", "cat", "sat", ".")),
             Sentence(("A", "zebra", "ran", "."))]
    al = align.align(enc, sents)
    strs = [enc.tokenizer.convert_ids_to_tokens(t) for t in al.tokens]
    assert strs[0] == ["[CLS]", "the", "un", "##believ", "##able", "cat", "sat", ".", "[SEP]"]
    assert al.pieces[0] == [(1,), (2, 3, 4), (5,), (6,), (7,)]
    assert al.pieces[1] == [(1,), (), (3,), (4,)]  # "zebra" is [UNK]: skipped, counted
    assert al.skipped == {"unknown": 1} and al.examples["unknown"] == [(1, 1, "zebra")]
    assert "1 skipped" in al.summary()


def test_alignment_counts_words_past_the_context():
    enc = wordpiece_encoder(n_ctx=6)  # [CLS] + 4 tokens + [SEP]
    al = align.align(enc, [Sentence(("the", "cat", "sat", "on", "the", "mat"))])
    assert al.pieces[0] == [(1,), (2,), (3,), (4,), (), ()] and al.skipped == {"beyond_context": 2}
    assert len(al.tokens[0]) == 6 and al.tokens[0][-1] == enc.tokenizer.sep_token_id


# ---------------------------------------------------------------------------------------------------------
# Activations
# ---------------------------------------------------------------------------------------------------------

def test_collect_equals_run_with_cache_pooled_by_hand(toy, tmp_path):
    sents = data.template_sentences(12, seed=7)
    hooks = ["blocks.0.hook_resid_pre", "blocks.2.hook_resid_post", "blocks.1.attn.hook_z"]
    for pool in ("mean", "first"):
        acts = activations.collect(toy, sents, hooks, pool=pool, cache=False, max_memory=20_000)
        assert acts.meta["n_rows"] == len(acts) == sum(map(len, sents))
        al = align.align(toy, sents)
        row = 0
        for s, pieces in zip(sents, al.pieces):
            _, cache = toy.run_with_cache(toy.to_tokens(s.text))
            for w, p in enumerate(pieces):
                assert (int(acts.sentence[row]), int(acts.word[row])) == (sents.index(s), w)
                for h in hooks:
                    act = cache[h][0].reshape(cache[h].shape[1], -1)
                    want = act[list(p)].mean(0) if pool == "mean" else act[p[0]]
                    torch.testing.assert_close(acts[h][row], want, atol=2e-5, rtol=1e-4)
                row += 1
    assert acts["blocks.1.attn.hook_z"].shape[1] == toy.cfg.n_heads * toy.cfg.d_head
    assert acts.labels("upos")[:len(sents[0])] == list(sents[0].upos)


def test_collect_batched_equals_one_at_a_time_on_an_encoder_with_padding():
    enc = wordpiece_encoder()
    sents = [Sentence(("The", "cat", "sat", "on", "the", "mat", ".")), Sentence(("A", "dog", "ran", ".")),
             Sentence(("The", "unbelievable", "story", ".")), Sentence(("The", "cat", "ran", "."))]
    together = activations.collect(enc, sents, cache=False)
    for i, s in enumerate(sents):
        alone = activations.collect(enc, [s], cache=False)
        rows = together.sentence == i
        for h in together.hooks:
            torch.testing.assert_close(together[h][rows], alone[h], atol=1e-5, rtol=1e-4)
    assert together.hooks == ["blocks.0.hook_resid_pre", "blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
    one = activations.collect(enc, sents, cache=False, batch_size=1)
    torch.testing.assert_close(one["blocks.1.hook_resid_post"], together["blocks.1.hook_resid_post"],
                               atol=1e-5, rtol=1e-4)


def test_collect_skips_unaligned_words_with_a_warning():
    enc = wordpiece_encoder()
    sents = [Sentence(("A", "zebra", "ran", ".")), Sentence(("The", "cat", "sat", "."))]
    with pytest.warns(UserWarning, match="1 skipped"):
        acts = activations.collect(enc, sents, cache=False)
    assert len(acts) == 7 and acts.skipped == {"unknown": 1}
    assert acts.word[:3].tolist() == [0, 2, 3] and acts.labels("word")[:3] == ["A", "ran", "."]


def test_collect_caches_per_hook_and_notices_new_weights(toy, tmp_path):
    sents = data.template_sentences(10, seed=8)
    first = activations.collect(toy, sents, [1, 2], cache=tmp_path)
    assert first.meta["computed"] == ["blocks.1.hook_resid_post", "blocks.2.hook_resid_post"]
    again = activations.collect(toy, sents, [2, 3], cache=tmp_path)
    assert again.meta["from_cache"] == ["blocks.2.hook_resid_post"]
    assert again.meta["computed"] == ["blocks.3.hook_resid_post"]
    assert torch.equal(again["blocks.2.hook_resid_post"], first["blocks.2.hook_resid_post"])
    other = activations.collect(toy, sents[:5], [2], cache=tmp_path)  # other data: not the cached file
    assert other.meta["computed"] == ["blocks.2.hook_resid_post"]
    changed = HookedTransformer(toy.cfg)
    changed.load_state_dict(toy.state_dict())
    changed.set_tokenizer(toy.tokenizer)
    with torch.no_grad():
        changed.blocks[0].mlp.W_out.mul_(1.5)
    fresh = activations.collect(changed, sents, [2], cache=tmp_path)
    assert fresh.meta["computed"] == ["blocks.2.hook_resid_post"]
    assert not torch.allclose(fresh["blocks.2.hook_resid_post"], first["blocks.2.hook_resid_post"])
    assert activations.collect(changed, sents, [2], cache=tmp_path).meta["computed"] == []
    with torch.no_grad():
        changed.blocks[1].attn.W_V.mul_(0.5)  # the same model object, changed in place
    assert activations.collect(changed, sents, [2], cache=tmp_path).meta["computed"] == ["blocks.2.hook_resid_post"]


def test_collect_rejects_bad_hooks_and_options(toy):
    sents = data.template_sentences(3)
    with pytest.raises(InputError, match="no hook 'blocks.9.hook_resid_post'"):
        activations.collect(toy, sents, ["blocks.9.hook_resid_post"], cache=False)
    with pytest.raises(InputError, match="attention patterns"):
        activations.collect(toy, sents, ["blocks.0.attn.hook_pattern"], cache=False)
    with pytest.raises(InputError, match="layers"):
        activations.collect(toy, sents, [7], cache=False)
    with pytest.raises(InputError, match="pool="):
        activations.collect(toy, sents, pool="last", cache=False)
    with pytest.raises(InputError, match="non-empty list of Sentence"):
        activations.collect(toy, [], cache=False)
    with pytest.raises(InputError, match="twice"):
        activations.collect(toy, sents, [1, "blocks.1.hook_resid_post"], cache=False)
    with pytest.raises(InputError, match="max_memory"):
        activations.collect(toy, sents, max_memory=0, cache=False)
