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
    per_layer = text.split(res.layers.title)[1]  # the table of each layer alone, under its title
    for name, acc in zip(res.layers.labels["layer"], res.layers.values.tolist()):
        assert re.search(rf"\n{name}\s+{acc:.3f}\n", per_layer), (name, acc, text)
    assert main(["probe", "edges", "-m", "zoo/toy-lm", "-n", "10", "--task", "pos", "--cumulative", "-q"]) == 0
    text = capsys.readouterr().out
    res = edge_probe(circuitlab.load_model("zoo/toy-lm"), template_sentences(10), "pos", cumulative=True, cache=False,
                     progress=False)
    assert res.summary() in text and res.differential.title in text
    for name, delta in zip(res.differential.labels["layer"], res.differential.values.tolist()):
        assert re.search(rf"\n{name}\s+{delta:.3f}", text.split(res.differential.title)[1]), (name, delta, text)
    with pytest.raises(SystemExit):
        main(["probe", "edges", "-m", "zoo/toy-lm", "--task", "srl"])


def _report_svgs(path):
    """The report's inline SVGs, each parsed as XML (so each is well-formed), by class."""
    import xml.etree.ElementTree as ET

    out = {}
    for s in re.findall(r"<svg\b.*?</svg>", path.read_text(), re.S):
        svg = ET.fromstring(s)
        out.setdefault(svg.get("class"), []).append(svg)
    return out


def _cell(v, c):
    return f"{v:.3f}" + (f" \u00b1 {c:.3f}" if c == c else "")


def test_probe_pos_prints_the_library_numbers_with_intervals(capsys, tmp_path, one_thread):
    from circuitlab.probing import probe_sweep, template_sentences

    out = tmp_path / "pos.html"
    assert main(["probe", "pos", "-m", "zoo/toy-lm", "-n", "30", "--seeds", "2", "-q", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    res = probe_sweep(circuitlab.load_model("zoo/toy-lm"), template_sentences(30), "upos", seeds=(0, 1), cache=False,
                      progress=False)
    assert "mean \u00b1 95% interval over seeds 0, 1" in text
    ci = res.meta["ci95"]
    assert bool((ci[:, :, 1] > 0).any())  # some interval is not zero, so its printing is tested
    for i, probe in enumerate(res.labels["probe"]):
        for j, layer in enumerate(res.labels["layer"]):
            cells = r"\s+".join(re.escape(_cell(float(res.values[i, j, k]), float(ci[i, j, k]))) for k in range(3))
            assert re.search(rf"^{probe} {layer}\s+{cells}$", text, re.M), (probe, layer, text)
    svgs = _report_svgs(out)
    assert len(svgs["cl-curves"]) == 3  # accuracy, control, selectivity
    whiskers = sum(p.get("class") == "cl-ci" for s in svgs["cl-curves"] for p in s.iter())
    assert whiskers == int((ci > 0).sum())  # one per interval above zero


def test_probe_structural_prints_the_library_numbers_and_draws_the_trees(capsys, tmp_path, one_thread):
    from circuitlab.probing import structural_sweep, template_sentences

    out = tmp_path / "tree.html"
    assert main(["probe", "structural", "-m", "zoo/toy-lm", "-n", "30", "--seeds", "2", "-q", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    res = structural_sweep(circuitlab.load_model("zoo/toy-lm"), template_sentences(30), seeds=(0, 1), cache=False,
                           progress=False)
    ci = res.meta["ci95"]
    for j, layer in enumerate(res.labels["layer"]):
        last = j == len(res.labels["layer"]) - 1  # the linear baseline: no interval
        cells = r"\s+".join(re.escape(_cell(float(res.values[j, k]), float("nan") if last else float(ci[j, k])))
                            for k in range(4))
        assert re.search(rf"^{layer}\s+{cells}$", text, re.M), (layer, text)
    ex = res.meta["example"]
    assert (f"best layer by UUAS: {ex['layer']}; its tree of test sentence {ex['id']}: {ex['correct']} of "
            f"{ex['gold_edges']} gold edges") in text
    svgs = _report_svgs(out)
    assert len(svgs["cl-curves"]) == 4
    (tree,) = svgs["cl-tree"]
    arcs = [p for p in tree.iter() if p.get("class") in ("cl-arc-gold", "cl-arc-pred")]
    gold = [p for p in arcs if p.get("class") == "cl-arc-gold"]
    pred = [p for p in arcs if p.get("class") == "cl-arc-pred"]
    assert len(gold) == len(ex["words"]) - 1 and len(pred) == len(ex["predicted"]) == sum(ex["keep"]) - 1
    assert sum(p.get("data-correct") == "true" for p in pred) == ex["correct"]
    assert f"{ex['correct']} of {ex['gold_edges']} gold edges recovered" in out.read_text()
