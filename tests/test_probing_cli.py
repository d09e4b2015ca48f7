"""``circuitlab probe``: each kind runs on zoo/toy-lm, prints the library's numbers, writes a report; bad input."""

from __future__ import annotations

import re

import pytest
import torch

import circuitlab
from circuitlab.cli import main
from circuitlab.probing import score_pairs, template_pairs


def test_probe_pairs_prints_the_library_numbers_and_writes_a_report(capsys, tmp_path):
    out = tmp_path / "pairs.html"
    assert main(["probe", "pairs", "-m", "zoo/toy-lm", "--n-per", "4", "--method", "prefix", "-q", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    res = score_pairs(circuitlab.load_model("zoo/toy-lm"), template_pairs(n_per=4), "prefix")
    for name, acc in zip(res.labels["phenomenon"], res.values.tolist()):
        assert re.search(rf"{name}\s+{acc:.3f}\s+\(4 pairs\)", text), (name, acc, text)
    assert f"overall {res.meta['overall']:.3f}" in text
    html = out.read_text()
    assert "npi_licensing" in html and "<html" in html.lower()


def test_probe_pairs_reads_blimp(capsys, tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_text('{"sentence_good": "The dogs are here.", "sentence_bad": "The dogs is here.", "UID": "agr"}\n'
                    "not json\n")
    assert main(["probe", "pairs", "-m", "zoo/toy-lm", "--blimp", str(path), "-q"]) == 1
    assert "line 2 is not valid JSON" in capsys.readouterr().err


def test_probe_cloze_and_heads(capsys):
    assert main(["probe", "cloze", "-m", "zoo/toy-lm", "-q"]) == 0
    text = capsys.readouterr().out
    assert "mean over relations" in text and "base@1" in text and "facts skipped" in text
    assert main(["probe", "heads", "-m", "zoo/toy-lm", "-n", "30", "-q"]) == 0
    text = capsys.readouterr().out
    assert "best head" in text and re.search(r"\bnsubj\s+L\d+ H\d+\s+[01]\.\d{3}", text)


def test_probe_bad_inputs(capsys):
    assert main(["probe", "pos", "-m", "zoo/toy-lm", "--data", "no-such-file.conllu", "-q"]) == 1
    assert "--data 'no-such-file.conllu'" in capsys.readouterr().err
    assert main(["probe", "cloze", "-m", "zoo/toy-lm", "--relations", "country_capital", "-q"]) == 1
    assert "no fact whose answer is one token" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["probe", "parse", "-m", "zoo/toy-lm"])


def test_probe_reads_a_conllu_file_with_multiword_tokens(capsys, tmp_path):
    # a UD treebank's contractions (a 2-3 range over `do`, `n't`) are read as their syntactic words
    from tests.test_probing import MWT
    path = tmp_path / "ud.conllu"
    path.write_text("\n".join(MWT.split("\n\n")[0].replace("m1", f"m{k}") + "\n" for k in range(25)))
    assert main(["probe", "heads", "-m", "zoo/toy-lm", "--data", str(path), "-q"]) == 0
    assert "best head" in capsys.readouterr().out


@pytest.fixture
def one_thread():
    """Small probes: one thread is faster, and steady on a busy machine (restored after)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_probe_edges_prints_the_library_numbers(capsys, one_thread):
    from circuitlab.probing import edge_probe, template_sentences

    assert main(["probe", "edges", "-m", "zoo/toy-lm", "-n", "10", "--task", "pos", "-q"]) == 0
    text = capsys.readouterr().out
    res = edge_probe(circuitlab.load_model("zoo/toy-lm"), template_sentences(10), "pos", cache=False, progress=False)
    assert res.summary() in text
    for name, acc in zip(res.scores.labels["probe"], res.scores.values.tolist()):
        assert re.search(rf"{name}\s+{acc:.3f}", text), (name, acc, text)
    with pytest.raises(SystemExit):
        main(["probe", "edges", "-m", "zoo/toy-lm", "--task", "srl"])
