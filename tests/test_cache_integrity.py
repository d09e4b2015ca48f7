"""Caches that cannot lie: what the package keeps on disk or across calls is used only for the weights and the
bytes it was made from.

- **Weight identity** (:func:`circuitlab.models.identity.weight_fingerprint`): every byte of every parameter, so
  writes into ``p.data`` in place (which move no version counter) are seen by the activation cache on disk and by
  the replicas an executor keeps.
- **Cache entries** (:func:`circuitlab.core.write_cache_entry`): a checksum of the payload and the count it
  promised; an entry damaged in the middle (same size), cut short, with bytes appended, empty, or holding another
  count is not used: it is recomputed, and a warning names the file.

The reference for every cached result is the same call with no cache (``cache=False``) on the current weights.
"""

from __future__ import annotations

import copy
import json
import warnings

import pytest
import torch

import circuitlab as cl
from circuitlab import distributed, probing
from circuitlab.core import read_cache_entry, write_cache_entry
from circuitlab.models import identity
from circuitlab.models.identity import weight_fingerprint

TOY = "zoo/toy-lm"
HOOKS = ["blocks.0.mlp.hook_post", "blocks.1.hook_resid_post"]


@pytest.fixture(scope="module")
def model():
    return cl.load_model(TOY)


@pytest.fixture(scope="module")
def sentences():
    return probing.template_sentences(12, seed=2)


# -- damage, as a disk, a crash or a hand does it ----------------------------------------------------------------

def flip_middle(path):
    """Bytes in the middle of the file changed, the size kept (what a bad sector or a stray write does)."""
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    for i in range(mid, mid + 8):
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])


def append_junk(path):
    path.write_bytes(path.read_bytes() + b"\x00junk" * 16)


def empty(path):
    path.write_bytes(b"")


DAMAGE = {"flip_middle": flip_middle, "truncate": truncate, "append_junk": append_junk, "empty": empty}


def _collect(model, sentences, cache):
    return probing.collect(model, sentences, HOOKS, cache=cache, progress=False)


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_activation_file_is_recomputed_with_a_warning(model, sentences, tmp_path, damage):
    fresh = _collect(model, sentences, cache=False)
    _collect(model, sentences, cache=tmp_path)
    files = sorted(tmp_path.rglob("*.pt"))
    assert len(files) == len(HOOKS)
    DAMAGE[damage](files[0])
    with pytest.warns(UserWarning, match=rf"cache entry .*{files[0].name}.*recomputed"):
        again = _collect(model, sentences, cache=tmp_path)
    for h in HOOKS:
        assert torch.equal(again[h], fresh[h]), h
    assert len(again.meta["computed"]) == 1  # the intact file was read, the damaged one recomputed
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # the recomputed entry was written again, intact
        third = _collect(model, sentences, cache=tmp_path)
    assert third.meta["computed"] == [] and all(torch.equal(third[h], fresh[h]) for h in HOOKS)


def test_an_entry_is_checked_against_its_checksum_length_count_and_key(tmp_path):
    path = tmp_path / "entry.bin"
    payload = bytes(range(256)) * 40
    write_cache_entry(path, payload, count=7, key={"a": 1})
    assert read_cache_entry(path, key={"a": 1}) == (payload, 7)
    with pytest.warns(UserWarning, match="another key"):
        assert read_cache_entry(path, key={"a": 2}) is None
    cases = {"flip_middle": "checksum", "truncate": "cut short", "append_junk": "more than",
             "empty": "empty"}
    for damage, words in cases.items():
        write_cache_entry(path, payload, count=7, key={"a": 1})
        DAMAGE[damage](path)
        with pytest.warns(UserWarning, match=rf"cache entry {path}.* {words}.*recomputed"):
            assert read_cache_entry(path, key={"a": 1}) is None
    path.write_bytes(payload)  # a file of the format before entries had a header
    with pytest.warns(UserWarning, match="no circuitlab cache header"):
        assert read_cache_entry(path) is None
    assert read_cache_entry(tmp_path / "absent.bin") is None  # no file: no warning (pytest fails on none here)


def test_an_activation_file_holding_other_rows_than_promised_is_recomputed(model, sentences, tmp_path):
    """An intact entry (checksum right) whose tensor has fewer rows than its header promised: the count decides."""
    import io

    fresh = _collect(model, sentences, cache=False)
    _collect(model, sentences, cache=tmp_path)
    path = sorted(tmp_path.rglob("*.pt"))[0]
    payload, count = read_cache_entry(path)
    header = json.loads(path.read_bytes().split(b"\n")[1])
    short = io.BytesIO()
    torch.save(torch.load(io.BytesIO(payload))[:-1].clone(), short)
    write_cache_entry(path, short.getvalue(), count=count, key=header["key"])
    with pytest.warns(UserWarning, match=rf"{path.name} holds {count - 1} rows; its header promised {count}"):
        again = _collect(model, sentences, cache=tmp_path)
    assert all(torch.equal(again[h], fresh[h]) for h in HOOKS)


# -- the corpus cache --------------------------------------------------------------------------------------------

@pytest.fixture
def debian(tmp_path, monkeypatch):
    from circuitlab.zoo import text_data

    pytest.importorskip(probing.data.SPACY_PACKAGE)
    try:
        text_data.require_corpora()
    except text_data.CorpusMissingError:
        pytest.skip("the Debian corpora (bible-kjv, fortunes) are not installed")
    monkeypatch.setenv("CIRCUITLAB_CACHE", str(tmp_path))
    return lambda: probing.data.default_sentences(20, seed=5, source="debian", progress=False)


@pytest.mark.parametrize("damage", ["truncate", "flip_middle"])
def test_a_damaged_corpus_file_is_labelled_again(debian, tmp_path, damage):
    full = debian()
    (path,) = (tmp_path / "probing" / "data").glob("*.conllu")
    DAMAGE[damage](path)
    with pytest.warns(UserWarning, match=rf"cache entry .*{path.name}"):
        again = debian()
    assert again == full and len(again) == 20
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        assert debian() == full  # written again, intact


def test_a_corpus_file_with_fewer_sentences_than_promised_is_labelled_again(debian, tmp_path):
    from circuitlab.tasks.sentences import write_conllu

    full = debian()
    (path,) = (tmp_path / "probing" / "data").glob("*.conllu")
    header = json.loads(path.read_bytes().split(b"\n")[1])
    write_cache_entry(path, write_conllu(full[:-1]).encode(), count=20, key=header["key"])  # checksum right
    with pytest.warns(UserWarning, match="holds 19 sentences; its header promised 20"):
        assert debian() == full


# -- weights changed after caching -------------------------------------------------------------------------------

def replace_data(m):
    W = m.blocks[0].mlp.W_in
    W.data = W.data * 1.5


def swap_columns_in_place(m):
    """Two neurons' input weights swapped through ``.data``, as one writes it: no version counter moves."""
    W = m.blocks[0].mlp.W_in
    W.data[:, [0, 1]] = W.data[:, [1, 0]]


def in_place_no_grad(m):
    with torch.no_grad():
        m.blocks[0].mlp.W_in.mul_(1.5)


def scale_data_in_place(m):
    m.blocks[0].mlp.W_in.data.mul_(1.5)


CHANGES = {"replace_data": replace_data, "swap_columns_in_place": swap_columns_in_place,
           "in_place_no_grad": in_place_no_grad, "scale_data_in_place": scale_data_in_place}


@pytest.mark.parametrize("change", list(CHANGES))
def test_the_activation_cache_sees_every_weight_change(model, sentences, tmp_path, change):
    m = copy.deepcopy(model)
    before = _collect(m, sentences, cache=tmp_path)
    CHANGES[change](m)
    after = _collect(m, sentences, cache=tmp_path)
    fresh = _collect(m, sentences, cache=False)
    h = "blocks.0.mlp.hook_post"
    assert not torch.equal(fresh[h], before[h])  # the change changes the activations...
    assert after.meta["from_cache"] == [] and torch.equal(after[h], fresh[h])  # ...and the cache knows it


@pytest.mark.parametrize("change", list(CHANGES))
def test_the_fingerprint_sees_every_weight_change_and_its_undoing(model, change):
    m = copy.deepcopy(model)
    before = weight_fingerprint(m)
    assert before == weight_fingerprint(copy.deepcopy(model))  # equal weights, equal fingerprints
    original = m.blocks[0].mlp.W_in.detach().clone()
    CHANGES[change](m)
    changed = weight_fingerprint(m, recheck=True)
    assert changed != before and changed == weight_fingerprint(copy.deepcopy(m))
    with torch.no_grad():
        m.blocks[0].mlp.W_in.copy_(original)
    assert weight_fingerprint(m) == before
    # what an executor's replicas are compared with is hashed again each time
    assert distributed.model_source(m).fingerprint == before
    swap_columns_in_place(m)
    assert distributed.model_source(m).fingerprint == weight_fingerprint(m, recheck=True) != before


def test_the_fingerprint_rehashes_only_the_parameters_that_changed(model, monkeypatch):
    m = copy.deepcopy(model)
    weight_fingerprint(m)
    hashed = []
    real = identity._param_digests
    monkeypatch.setattr(identity, "_param_digests", lambda params: hashed.append([n for n, _ in params]) or
                        real(params))
    first = weight_fingerprint(m)
    assert hashed == [[]]  # a repeat call hashes nothing
    with torch.no_grad():
        m.blocks[2].attn.W_Q.add_(1.0)
    assert weight_fingerprint(m) != first and hashed[-1] == ["blocks.2.attn.W_Q"]
    assert len(weight_fingerprint(m, recheck=True)) == 32 and len(hashed[-1]) == len(list(m.parameters()))


def test_the_fingerprint_does_not_depend_on_how_many_threads_hash(model, monkeypatch):
    """Parameters are cut into fixed pieces hashed on several threads: the digest is the same on one thread."""
    import os

    monkeypatch.setattr(identity, "_PIECE", 4096)  # many pieces per parameter
    many = weight_fingerprint(copy.deepcopy(model))
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    assert weight_fingerprint(copy.deepcopy(model)) == many
    # parameters copied before hashing (here: not contiguous; on a GPU: every one) are hashed a few at a time
    monkeypatch.setattr(identity, "_COPIED", 0)
    strided = copy.deepcopy(model)
    for p in strided.parameters():
        if p.ndim == 2:
            p.data = p.data.t().contiguous().t()  # the same values, other strides
    assert not all(p.is_contiguous() for p in strided.parameters())
    assert weight_fingerprint(strided) == many


def test_replicas_of_a_directory_saved_again_are_not_served(model, tmp_path):
    """A model given by its directory: what a replica-keeping executor compares carries the weights' fingerprint,
    so saving other weights to the same directory is a different model (the replicas restart), not the same."""
    from circuitlab.distributed.ray import _same_model

    cl.save_model(model, tmp_path)
    first = identity.replica_source(identity.model_source(str(tmp_path), cl.load_model(tmp_path)))
    assert first.fingerprint == weight_fingerprint(model)
    changed = copy.deepcopy(model)
    swap_columns_in_place(changed)
    cl.save_model(changed, tmp_path)
    second = identity.replica_source(identity.model_source(str(tmp_path), cl.load_model(tmp_path)))
    assert second.spec == first.spec and second.fingerprint == weight_fingerprint(changed, recheck=True)
    assert _same_model(first, first) and not _same_model(first, second)


# -- the real models' converted copies ---------------------------------------------------------------------------

@pytest.fixture
def fake_real(tmp_path, monkeypatch):
    """A stand-in real model (a random llama-style config saved on conversion) in an empty cache: ``(load,
    conversions, folder)``."""
    from circuitlab.models import real
    from circuitlab.testing import random_model

    conversions: list = []

    def convert(dest):
        conversions.append(dest.name)
        cl.save_model(random_model("llama"), dest)

    def load(path, device):
        from circuitlab.models.io import load_model_dir

        return load_model_dir(path, device=device)

    spec = real.RealModel(name="fake-real", kind="hooked", source="test", licence="MIT", description="a stand-in",
                          modules=("torch",), distributions=("torch",), install="pip install fake", convert=convert,
                          load=load)
    monkeypatch.setenv("CIRCUITLAB_CACHE", str(tmp_path))
    monkeypatch.setitem(real.REAL_MODELS, "fake-real", spec)
    return (lambda: cl.load_model("fake-real")), conversions, tmp_path / "real" / "fake-real"


@pytest.mark.parametrize("damage", ["flip_middle", "truncate", "append_junk", "empty"])
def test_a_damaged_converted_model_is_converted_again(fake_real, damage):
    load, conversions, folder = fake_real
    first = load()
    assert len(conversions) == 1
    DAMAGE[damage](folder / "model.safetensors")
    with pytest.warns(UserWarning, match=r"cache entry .*model\.safetensors.*recomputed"):
        again = load()
    assert len(conversions) == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        load()  # intact again: read, not converted
    assert len(conversions) == 2
    # the stand-in converts to fresh random weights: the reconverted copy is what its card says
    assert weight_fingerprint(again) == weight_fingerprint(load()) and first.cfg == again.cfg


def test_a_copy_converted_before_cards_held_checksums_is_kept(fake_real):
    load, conversions, folder = fake_real
    load()
    card = json.loads((folder / "card.json").read_text())
    del card["files"]
    (folder / "card.json").write_text(json.dumps(card))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        load()
    assert len(conversions) == 1 and "files" in json.loads((folder / "card.json").read_text())
    flip_middle(folder / "model.safetensors")  # from now on, checked
    with pytest.warns(UserWarning, match="checksum"):
        load()
    assert len(conversions) == 2


def test_the_induction_reference_of_a_directory_saved_again_is_established_again(tmp_path):
    """``induction_reference`` caches what it establishes for a model given by name; a directory saved again
    with other weights is another model, not the cached one."""
    from circuitlab.circuits import induction_reference

    base = cl.load_model("zoo/attn-only-2l")
    cl.save_model(base, tmp_path)
    kw = dict(seq_len=6, n_seqs=4)
    first = induction_reference(str(tmp_path), **kw)
    changed = copy.deepcopy(base)
    with torch.no_grad():
        changed.blocks[1].attn.W_V.mul_(0.5)
    cl.save_model(changed, tmp_path)
    again = induction_reference(str(tmp_path), **kw)
    want = induction_reference(changed, **kw)
    assert again.meta["effects"] == want.meta["effects"] != first.meta["effects"]
