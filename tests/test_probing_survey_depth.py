"""The depth profile (word-level syntax low, sentence-level semantics high): the expected layer against closed
forms, the hooks' depths, the per-layer accuracies against probe_sweep / sentence_sweep run on their own (the
sentence tasks on activations collected again from only the labelled sentences), the normalisation, and the
sentence-label rule against hand-labelled parses."""

import math

import pytest
import torch

import circuitlab
from circuitlab.errors import InputError
from circuitlab.probing import probe_sweep, sentence_sweep, template_sentences
from circuitlab.probing.depth import depth_profile, expected_layer, hook_depth
from circuitlab.tasks.sentence_labels import properties_of


def test_expected_layer_closed_forms():
    # running max 0.5 0.7 0.7 0.9: gains 0.2 at depth 1 and 0.2 at depth 3 -> 2.0
    assert expected_layer(torch.tensor([0.5, 0.7, 0.6, 0.9]), [0, 1, 2, 3]) == pytest.approx(2.0)
    # a monotone curve: Tenney et al.'s sum_l l (s_l - s_{l-1}) / (s_L - s_0)
    s = [0.1, 0.4, 0.5, 0.8, 0.85]
    tenney = sum(l * (s[l] - s[l - 1]) for l in range(1, 5)) / (s[-1] - s[0])
    assert expected_layer(torch.tensor(s), range(5)) == pytest.approx(tenney)
    assert expected_layer(torch.tensor([0.3, 0.9]), [0, 6]) == pytest.approx(6.0)  # depths, not positions
    assert math.isnan(expected_layer(torch.tensor([0.9, 0.8, 0.9]), [0, 1, 2]))  # never above the first
    with pytest.raises(InputError, match="depths"):
        expected_layer(torch.tensor([0.1, 0.2]), [0])


def test_hook_depth():
    assert [hook_depth(h) for h in ("blocks.0.hook_resid_pre", "blocks.0.hook_resid_post", "blocks.3.hook_resid_pre",
                                    "blocks.3.hook_resid_post")] == [0, 1, 3, 4]
    with pytest.raises(InputError, match="residual stream"):
        hook_depth("blocks.1.mlp.hook_post")


@pytest.fixture(scope="module")
def toy():
    return circuitlab.load_model("zoo/toy-lm")


def test_depth_profile_matches_the_sweeps(toy):
    sents = template_sentences(60, seed=2)
    labels = {"long": [len(s) > 5 for s in sents],
              "pron": [("PRON" in s.upos) if i % 4 else None for i, s in enumerate(sents)]}  # a quarter unlabelled
    hooks = ["blocks.0.hook_resid_pre", "blocks.1.hook_resid_post", "blocks.3.hook_resid_post"]
    prof = depth_profile(toy, sents, word_tasks=("upos",), sentence_tasks=("long", "pron"), sentence_labels=labels,
                         hooks=hooks, min_class=3, cache=False)
    assert prof.accuracy.labels == {"task": ["upos", "long", "pron"], "layer": ["emb", "L1", "L3"]}
    assert prof.level == {"upos": "word", "long": "sentence", "pron": "sentence"}
    one = dict(hooks=hooks, probes=("linear",), seeds=(0,), cache=False)
    upos = probe_sweep(toy, sents, "upos", control=False, **one)
    torch.testing.assert_close(prof.accuracy.values[0], upos.values[0, :, 0])
    long_ = sentence_sweep(toy, labels["long"], sents, **one)
    torch.testing.assert_close(prof.accuracy.values[1], long_.values[0, :, 0])
    kept = [i for i, v in enumerate(labels["pron"]) if v is not None]
    pron = sentence_sweep(toy, [labels["pron"][i] for i in kept], [sents[i] for i in kept], **one)
    torch.testing.assert_close(prof.accuracy.values[2], pron.values[0, :, 0])
    acc = prof.accuracy.values
    torch.testing.assert_close(prof.normalised.values, acc / acc.max(1, keepdim=True).values)
    assert (prof.normalised.values.max(1).values == 1).all()
    for i in range(3):
        e, best, top, _ = prof.expected.values[i].tolist()
        want = expected_layer(acc[i], [0, 2, 4])
        assert (math.isnan(e) and math.isnan(want)) or e == pytest.approx(want, abs=1e-5)
        assert best == [0, 2, 4][int(acc[i].argmax())] and top == pytest.approx(float(acc[i].max()))
    assert "expected" in prof.summary()


def test_depth_profile_bad_inputs(toy):
    sents = template_sentences(30)
    with pytest.raises(InputError, match="word_tasks"):
        depth_profile(toy, sents, word_tasks=("nope",), sentence_tasks=(), cache=False)
    with pytest.raises(InputError, match="sentence_labels"):
        depth_profile(toy, sents, word_tasks=(), sentence_tasks=("long",), cache=False)
    with pytest.raises(InputError, match="fewer than two labels"):
        depth_profile(toy, sents, word_tasks=(), sentence_tasks=("one",), sentence_labels={"one": ["a"] * 30},
                      hooks=[1], cache=False)
    with pytest.raises(InputError, match="residual stream"):
        depth_profile(toy, sents, sentence_tasks=(), hooks=["blocks.1.mlp.hook_post"], cache=False)
    with pytest.raises(InputError, match="too_few"):
        depth_profile(toy, sents, word_tasks=(), sentence_tasks=("one",), sentence_labels={"one": ["a"] * 30},
                      hooks=[1], too_few="ignore", cache=False)
    with pytest.raises(InputError, match="no task left"):  # skipping the only task leaves nothing to probe
        depth_profile(toy, sents, word_tasks=(), sentence_tasks=("one",), sentence_labels={"one": ["a"] * 30},
                      hooks=[1], too_few="skip", cache=False)


def test_depth_profile_skips_a_one_class_task_and_says_why(toy):
    """too_few="skip": the task with one class is left out (named in meta, with its counts); the other task's row is
    the same as probing it alone."""
    sents = template_sentences(30)
    labels = {"one": ["a"] * 30, "two": ["x" if i % 2 else "y" for i in range(30)]}
    both = depth_profile(toy, sents, word_tasks=(), sentence_tasks=("one", "two"), sentence_labels=labels,
                         hooks=[1], too_few="skip", cache=False)
    alone = depth_profile(toy, sents, word_tasks=(), sentence_tasks=("two",), sentence_labels=labels, hooks=[1],
                          cache=False)
    assert both.accuracy.labels["task"] == ["two"] and "{'a': 30}" in both.accuracy.meta["left_out_tasks"]["one"]
    torch.testing.assert_close(both.accuracy.values, alone.accuracy.values)


def rows(text, tags, deps, heads):
    return list(zip(text.split(), tags.split(), deps.split(), heads))


def test_sentence_label_rule_on_hand_parses():
    # The dog was taken by the man .   (passive, past, declarative)
    assert properties_of(rows("The dog was taken by the man .", "DT NN VBD VBN IN DT NN .",
                              "det nsubjpass auxpass ROOT agent det pobj punct", [1, 3, 3, 3, 3, 6, 4, 3])) == \
        {"tense": "past", "voice": "passive", "type": "declarative"}
    # Dogs bark .
    assert properties_of(rows("Dogs bark .", "NNS VBP .", "nsubj ROOT punct", [1, 1, 1])) == \
        {"tense": "present", "voice": "active", "type": "declarative"}
    # Take the book .
    assert properties_of(rows("Take the book .", "VB DT NN .", "ROOT det dobj punct", [0, 2, 0, 0])) == \
        {"tense": None, "voice": "active", "type": "imperative"}
    # Will you come ?
    assert properties_of(rows("Will you come ?", "MD PRP VB .", "aux nsubj ROOT punct", [2, 2, 2, 2])) == \
        {"tense": "future", "voice": "active", "type": "question"}
    # Not responsible for errors .   (no verb)
    assert properties_of(rows("Not responsible for errors .", "RB JJ IN NNS .", "neg ROOT prep pobj punct",
                              [1, 1, 1, 2, 1])) == {"tense": None, "voice": None, "type": "declarative"}


NOUNS = ("dog", "cat", "farmer", "teacher", "child", "doctor", "baker", "pilot")
FORMS = {  # (text, tense, voice, type) by construction
    "past active": ("The {a} chased the {b} .", "past", "active", "declarative"),
    "past passive": ("The {b} was chased by the {a} .", "past", "passive", "declarative"),
    "present active": ("The {a} chases the {b} .", "present", "active", "declarative"),
    "present passive": ("The {b} is chased by the {a} .", "present", "passive", "declarative"),
    "question": ("Did the {a} chase the {b} ?", "past", "active", "question"),
    "wh-question": ("Who chased the {b} ?", "past", "active", "question"),
}


def test_spacy_labels_and_the_depth_command(tmp_path, capsys):
    """spaCy's parse read by the rule gives the labels the sentences were built with; the command runs on them."""
    from circuitlab.tasks import sentences as data

    pytest.importorskip(data.SPACY_PACKAGE)
    from circuitlab.cli import main
    from circuitlab.tasks.sentence_labels import sentence_properties

    built = [(form.format(a=a, b=b), tense, voice, kind) for a, b in zip(NOUNS, NOUNS[1:] + NOUNS[:1])
             for form, tense, voice, kind in FORMS.values()]
    sents = [data.Sentence(tuple(text.split()), id=f"s{i}") for i, (text, *_) in enumerate(built)]
    props = sentence_properties(sents)
    assert [(p["tense"], p["voice"], p["type"]) for p in props] == [b[1:] for b in built]
    path = tmp_path / "built.conllu"
    path.write_text(data.write_conllu(data.label_text([b[0] for b in built])))
    assert main(["probe", "depth", "-m", "zoo/toy-lm", "--data", str(path), "-n", "48", "-q"]) == 0
    out = capsys.readouterr().out
    assert "expected" in out and "voice" in out and "upos" in out


def test_finding_rule():
    from circuitlab.reproduce.syntax_depth import judge, profile_hooks

    level = {"upos": "word", "deprel": "word", "tense": "sentence", "voice": "sentence"}
    a, b, extra = judge({"upos": 1.0, "deprel": 2.0, "tense": 3.0, "voice": 4.0}, level, 6)
    assert a and b and extra["gap"] == pytest.approx(2.0)
    a, b, _ = judge({"upos": 1.0, "deprel": 3.5, "tense": 3.0, "voice": 4.0}, level, 6)  # gap 1.25 >= 0.6, overlap
    assert a and not b
    # NaN counts as depth 0: word mean 1.0, sentence mean 2.1, gap 1.1 < 0.1 * 12
    a, b, _ = judge({"upos": float("nan"), "deprel": 2.0, "tense": 2.0, "voice": 2.2}, level, 12)
    assert not a and not b  # tense 2.0 is not above deprel 2.0
    assert profile_hooks(type("M", (), {"cfg": type("C", (), {"n_layers": 30})})())[-1] == "blocks.29.hook_resid_post"
    assert len(profile_hooks(type("M", (), {"cfg": type("C", (), {"n_layers": 30})})())) == 13
    assert len(profile_hooks(type("M", (), {"cfg": type("C", (), {"n_layers": 6})})())) == 7
