"""``circuitlab neurons``: examples and explain on zoo/toy-lm print the library's numbers and write reports; bad input
ends in one-line errors naming the option."""

from __future__ import annotations

import random

import pytest

import circuitlab
from circuitlab.cli import main
from circuitlab.neurons.examples import neuron_page
from circuitlab.neurons.explain import score_explanations

WORDS = ["cat", "dog", "king", "river", "bread", "stone", "house", "light", "night", "sea", "field", "door"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    rng = random.Random(5)
    lines = [f"{rng.choice(['The', 'A', 'My'])} {rng.choice(WORDS)} {rng.choice(['saw', 'took', 'left'])} the "
             f"{rng.choice(WORDS)} by the {rng.choice(WORDS)}." for _ in range(30)]
    path = tmp_path_factory.mktemp("neurons") / "texts.txt"
    path.write_text("\n".join(lines) + "\n")
    return path, lines


def test_explain_prints_the_library_scores_and_writes_a_report(data, capsys, tmp_path):
    path, lines = data
    out = tmp_path / "explain.html"
    assert main(["neurons", "explain", "-m", "zoo/toy-lm", "--layer", "-2", "--neuron", "5,60,200", "--data", str(path),
                 "--excerpts", "3", "-q", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    res = score_explanations(circuitlab.load_model("zoo/toy-lm"), lines, 2, [5, 60, 200], n_explain=3, n_top=3,
                             n_random=3, progress=False)
    assert res.summary() in text
    d = res.distribution()
    assert f"mean {d['mean']:+.3f}  median {d['median']:+.3f}" in text
    html = out.read_text()
    assert "cl-histogram" in html and "true vs simulated" in html and html.count('data-component="ColoredTokens"') >= 2


def test_examples_prints_the_top_contexts(data, capsys):
    path, lines = data
    assert main(["neurons", "examples", "-m", "zoo/toy-lm", "--layer", "1", "--neuron", "42", "--data", str(path),
                 "-k", "3", "-q"]) == 0
    text = capsys.readouterr().out
    page = neuron_page(circuitlab.load_model("zoo/toy-lm"), lines, 1, 42, k=3, progress=False)
    assert f"L1 N42 on 30 texts ({page.n_tokens} tokens)" in text
    for i, e in enumerate(page.examples.examples):
        assert f"#{i + 1:<2} {e.activation:8.3f}  {e.token!r}" in text


@pytest.mark.parametrize("argv,message", [
    (["explain", "--llm"], "--llm needs a language-model endpoint"),
    (["examples"], "needs --neuron"),
    (["examples", "--neuron", "1,x"], "--neuron '1,x'"),
    (["examples", "--neuron", "1", "--data", "no/such/file.txt"], "--data 'no/such/file.txt'"),
    (["explain", "--layer", "99"], "layer=99 is out of range"),
    (["examples", "--neuron", "100000", "--data", "__DATA__"], "neuron=100000 is out of range"),
])
def test_bad_input_is_a_one_line_error(argv, message, data, capsys, monkeypatch):
    monkeypatch.delenv("CIRCUITLAB_LLM_URL", raising=False)
    argv = [str(data[0]) if a == "__DATA__" else a for a in argv]
    assert main(["neurons", *argv[:1], "-m", "zoo/toy-lm", *argv[1:], "-q"]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_rank_and_ablate_wrap_the_ranking_and_the_ablation_curves(capsys, tmp_path):
    from circuitlab.neurons.ranking import rank_neurons
    from circuitlab.probing import template_sentences

    out = tmp_path / "ablate.html"
    assert main(["neurons", "ablate", "-m", "zoo/toy-lm", "--layer", "2", "--sentences", "40", "--method", "anova",
                 "--protocol", "masked", "-q", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    r = rank_neurons(circuitlab.load_model("zoo/toy-lm"), template_sentences(40, seed=0), method="anova", hooks=[2],
                     progress=False, cache=False)
    best = int(r.meta["order"][0][1])
    assert f"top: {r.meta['ranking'][0]} ({float(r.values[0, best]):.3g})" in text
    rows = [line for line in text.splitlines() if line.startswith("masked accuracy top keep")]
    assert len(rows) == 1 and all(0 <= float(v) <= 1 for v in rows[0].split()[4:])
    assert "Ablation curves" in out.read_text()


def test_rank_reads_a_task_and_labelled_sentences_from_a_conllu_file(capsys, tmp_path):
    from circuitlab.neurons.ranking import rank_neurons
    from circuitlab.probing import read_conllu, template_sentences, write_conllu

    path = tmp_path / "gold.conllu"
    path.write_text(write_conllu(template_sentences(40, seed=5)))
    assert main(["neurons", "rank", "-m", "zoo/toy-lm", "--layer", "1", "--labelled", str(path), "--task", "deprel",
                 "--method", "anova", "-q"]) == 0
    text = capsys.readouterr().out
    r = rank_neurons(circuitlab.load_model("zoo/toy-lm"), read_conllu(path), "deprel", method="anova", hooks=[1],
                     progress=False, cache=False)
    best = int(r.meta["order"][0][1])
    assert f"({path}), deprel" in text
    assert f"top: {r.meta['ranking'][0]} ({float(r.values[0, best]):.3g})" in text
    assert main(["neurons", "rank", "-m", "zoo/toy-lm", "--labelled", "nowhere.conllu", "-q"]) == 1
    assert "--labelled 'nowhere.conllu' is neither" in capsys.readouterr().err
