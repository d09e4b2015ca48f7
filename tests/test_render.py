"""Rendering: heatmaps show the right numbers in the right cells, views carry their data, reports are
self-contained with circuitsvis's JavaScript exactly once."""

from __future__ import annotations

import json
import re
import warnings
from html import unescape
from html.parser import HTMLParser

import circuitsvis
import pytest
import torch

import circuitlab as cl
from circuitlab.errors import CircuitlabError, InputError
from circuitlab.results import Result
from circuitlab.render import (
    HTML,
    Section,
    attention_heads,
    attention_patterns,
    colored_tokens,
    count_views,
    external_references,
    heatmap_html,
    report,
    result_html,
    topk_tokens,
)
from circuitlab.render.bundle import bundle_path, count_bundles
from circuitlab.render.heatmap import colour
from circuitlab.render.views import round_significant
from circuitlab.testing import random_model

BUNDLE_BYTES = bundle_path().stat().st_size


class _Cells(HTMLParser):
    """Collects heatmap cells (title, data-value, background) and header texts, in document order."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: list[dict[str, str]] = []
        self.headers: list[tuple[str, str]] = []  # (class, text)
        self.scripts: list[str] = []
        self._th: str | None = None
        self._script = False
        self._text: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "td" and "cl-cell" in (a.get("class") or ""):
            self.cells.append(a)
        if tag == "th":
            self._th, self._text = a.get("class") or "", []
        if tag == "script":
            self._script, self._text = True, []

    def handle_data(self, data):
        if self._th is not None or self._script:
            self._text.append(data)

    def handle_endtag(self, tag):
        if tag == "th" and self._th is not None:
            self.headers.append((self._th, "".join(self._text)))
            self._th = None
        if tag == "script" and self._script:
            self.scripts.append("".join(self._text))
            self._script = False


def parse(html: str) -> _Cells:
    p = _Cells()
    p.feed(html)
    return p


def _view_props(script: str) -> dict:
    """The props object a mount script passes to CircuitsVis.render."""
    m = re.search(r"CircuitsVis\.render\(\"[^\"]+\", CircuitsVis\[\"\w+\"\], (.*)\);\n\}\)\(\);", script, re.S)
    assert m, script[:300]
    return json.loads(m.group(1).replace("<\\/", "</").replace("<\\!--", "<!--"))


# -- heatmaps -------------------------------------------------------------------------------------------

def test_heatmap_cells_hold_the_values_in_row_major_order():
    vals = torch.randn(3, 5, generator=torch.Generator().manual_seed(0))
    rows, cols = ["L0", "L1", "L2"], [" a", "b", "c", "d", "e"]
    p = parse(heatmap_html(vals, rows, cols, "layer", "pos"))
    assert len(p.cells) == 15
    got = torch.tensor([float(c["data-value"]) for c in p.cells]).reshape(3, 5)
    torch.testing.assert_close(got, vals, rtol=1e-5, atol=1e-6)
    # hover text names the row and column (token strings keep their spaces) and the value
    assert p.cells[0]["title"] == f"layer L0, pos  a: {vals[0, 0].item():.6g}"
    assert p.cells[7]["title"].startswith("layer L1, pos c: ")
    col_heads = [t for cls, t in p.headers if "cl-col" in cls]
    row_heads = [t for cls, t in p.headers if "cl-row" in cls]
    assert col_heads == cols and row_heads == rows


def test_heatmap_colours_are_centred_on_zero_and_saturate_at_vmax():
    assert colour(0.0, 2.0) == "#ffffff"
    assert colour(2.0, 2.0) == "#2563eb" and colour(5.0, 2.0) == "#2563eb"  # full blue, clipped
    assert colour(-2.0, 2.0) == "#dc2626"  # full red
    assert colour(float("nan"), 1.0) == "#d4d4d4"
    # darker as |v| grows (sum of channels falls monotonically)
    sums = [sum(int(colour(v, 1.0)[i:i + 2], 16) for i in (1, 3, 5)) for v in (0.0, 0.25, 0.5, 0.75, 1.0)]
    assert sums == sorted(sums, reverse=True) and len(set(sums)) == 5
    p = parse(heatmap_html(torch.tensor([[1.0, -1.0, 0.0, float("nan")]]), ["r"], list("abcd")))
    assert [c["style"].split(";")[0] for c in p.cells] == [f"background:{x}" for x in
                                                           ("#2563eb", "#dc2626", "#ffffff", "#d4d4d4")]


def test_heatmap_rejects_wrong_label_counts():
    with pytest.raises(ValueError, match="one label per row"):
        heatmap_html(torch.zeros(2, 3), ["a"], ["x", "y", "z"])


def test_wide_heatmaps_go_compact_but_keep_hover_values():
    vals = torch.arange(40.0).reshape(1, 40)
    p = parse(heatmap_html(vals, ["r"], [str(i) for i in range(40)]))
    assert len(p.cells) == 40 and float(p.cells[39]["data-value"]) == 39.0
    assert "cl-compact" in heatmap_html(vals, ["r"], [str(i) for i in range(40)])


# -- results --------------------------------------------------------------------------------------------

def test_result_html_names_what_was_measured_and_the_largest_entries():
    vals = torch.zeros(2, 4)
    vals[1, 2], vals[0, 3] = 0.9, -0.5
    r = cl.Result(vals, ("layer", "head"), title="Induction score", metric="induction score",
                  model="zoo/attn-only-2l", task="repeated tokens", meta={"description": "Mean attention."})
    html = r.to_html()
    assert "<h3>Induction score</h3>" in html
    assert "model: zoo/attn-only-2l" in html and "task: repeated tokens" in html and "Mean attention." in html
    summary = re.search(r"Largest in magnitude: ([^<]*)", html).group(1)
    assert summary.startswith("L1 H2 = 0.9; L0 H3 = -0.5")
    assert len(parse(html).cells) == 8
    assert r._repr_html_() == html


def test_result_html_handles_every_rank():
    scalar = cl.Result(torch.tensor(0.25), (), title="loss")
    assert "0.25" in result_html(scalar)
    one = cl.Result(torch.arange(5.0), ("pos",), labels={"pos": list("abcde")})
    assert len(parse(result_html(one)).cells) == 5
    three = cl.Result(torch.randn(2, 3, 4), ("layer", "head", "pos"))
    p = parse(result_html(three))
    assert len(p.cells) == 24
    assert result_html(three).count("class='cl-heatmap'") == 2
    many = cl.Result(torch.randn(30, 2, 2), ("batch", "a", "b"))
    html = result_html(many)
    assert html.count("class='cl-heatmap'") == 24 and "Showing 24 of 30 panels" in html


def test_attention_shaped_results_become_circuitsvis_views():
    toks = [f"t{i}" for i in range(6)]
    pattern = torch.softmax(torch.randn(2, 3, 6, 6), -1)
    r = cl.Result(pattern, ("layer", "head", "dest", "src"), labels={"dest": toks, "src": toks})
    html = r.to_html()
    assert count_views(html) == 1 and count_bundles(html) == 1
    props = _view_props(parse(html).scripts[-1])
    assert props["tokens"] == toks
    assert props["attentionHeadNames"] == [f"L{l} H{h}" for l in range(2) for h in range(3)]
    # props are rounded to 4 significant digits to keep pages small
    torch.testing.assert_close(torch.tensor(props["attention"]), pattern.reshape(6, 6, 6), rtol=5e-4, atol=0)


# -- views ----------------------------------------------------------------------------------------------

def test_attention_patterns_view_matches_transformer_lens_cache():
    model = random_model("attn_only", seed=3)
    toks = torch.randint(1, 50, (1, 7), generator=torch.Generator().manual_seed(1))
    view = attention_patterns(model, toks, layers=[1])
    _, cache = model.run_with_cache(toks)
    props = view.props
    torch.testing.assert_close(props["attention"], cache["pattern", 1][0])
    assert props["attentionHeadNames"] == ["L1H0", "L1H1", "L1H2", "L1H3"]
    assert props["tokens"] == [f"#{t}" for t in toks[0].tolist()]


def test_view_props_survive_html_escaping():
    evil = ["</script><script>alert(1)</script>", "<!--", "a'b\"c", " space"]
    view = colored_tokens(evil, torch.tensor([1.0, -2.0, float("nan"), 0.5]), title="evil")
    html = view.to_html()
    p = parse(html)
    # the bundle, then the mount script: the token strings did not end either script early
    assert len(p.scripts) == 2
    props = _view_props(p.scripts[-1])
    assert props["tokens"] == evil
    assert props["values"][:2] == [1.0, -2.0] and props["values"][2] != props["values"][2]  # NaN survives


def test_props_keep_four_significant_digits():
    x = torch.tensor([0.123456, 12345.678, -0.00012345678, 0.0, 1e-30, 3.0, 987654321.0, -2.5e-7], dtype=torch.float64)
    assert round_significant(x).tolist() == [float(f"{v:.4g}") for v in x.tolist()]
    assert json.dumps(round_significant(torch.tensor([0.1 + 0.2, 2 / 3])).tolist()) == "[0.3, 0.6667]"


def test_topk_tokens_lists_the_largest_and_smallest_positions():
    acts = torch.randn(2, 9, 4, generator=torch.Generator().manual_seed(5))
    view = topk_tokens([[f"w{i}" for i in range(9)]], [acts], k=3)
    order = acts.argsort(dim=1, descending=True)  # brute force, per layer and neuron
    assert torch.equal(torch.as_tensor(view.props["topkIdxs"][0]), order[:, :3])
    assert torch.equal(torch.as_tensor(view.props["bottomkIdxs"][0]), order[:, -3:])
    torch.testing.assert_close(torch.as_tensor(view.props["topkVals"][0]), acts.gather(1, order[:, :3]))


def test_views_check_token_counts():
    with pytest.raises(InputError, match="one per position"):
        attention_heads(torch.rand(2, 4, 4), ["a", "b", "c"])
    with pytest.raises(InputError, match="dest == src"):
        attention_heads(torch.rand(2, 4, 3), ["a", "b", "c"])
    with pytest.raises(InputError, match="one name per head"):
        attention_heads(torch.rand(2, 3, 3), ["a", "b", "c"], head_names=["x"])


# -- reports --------------------------------------------------------------------------------------------

def _items():
    toks = [f"t{i}" for i in range(8)]
    heads = cl.Result(torch.rand(2, 4), ("layer", "head"), title="Head scores", metric="score",
                      model="zoo/attn-only-2l", task="repeated tokens")
    resid = cl.Result(torch.randn(2, 8), ("layer", "pos"), labels={"pos": toks}, title="Residual patching",
                      metric="logit diff", model="zoo/attn-only-2l", task="repeated tokens")
    return [
        heads,
        Section("Patching", [resid, "Positions in the second half matter."], text="A sweep."),
        attention_heads(torch.softmax(torch.randn(4, 8, 8), -1), toks, title="Patterns", model="m", task="t"),
        colored_tokens(toks, torch.randn(8), title="Per-token loss"),
        circuitsvis.tokens.colored_tokens(toks, torch.randn(8).tolist()),  # circuitsvis's own rendering
        HTML("<h3>Raw</h3><p>raw html</p>"),
        "Closing words.",
    ]


def test_report_inlines_the_bundle_once_and_mounts_every_view(tmp_path):
    path = report(_items(), tmp_path / "sub" / "r.html", title="Test <report>", intro="Intro text.")
    page = path.read_text()
    assert count_bundles(page) == 1
    assert count_views(page) == 3
    # one bundle plus a little: three standalone circuitsvis views would each carry a copy
    assert BUNDLE_BYTES < len(page.encode()) < BUNDLE_BYTES + 60_000
    assert "sourceMappingURL" not in page
    # the bundle loads (in <head>) before the first mount script runs
    assert page.index("data-circuitlab-bundle") < page.index("CircuitsVis.render(")
    assert external_references(page) == []
    assert "<title>Test &lt;report&gt;</title>" in page and "Intro text." in page


def test_report_contents_link_to_headed_sections(tmp_path):
    page = report(_items(), tmp_path / "r.html").read_text()
    links = re.findall(r"<li><a href='#([^']+)'>([^<]+)</a>", page)
    titles = [t for _, t in links]
    assert titles == ["Head scores", "Patching", "Residual patching", "Patterns", "Per-token loss",
                      "circuitsvis view", "Raw"]
    nav = page[page.index("<nav"):page.index("</nav>")]
    # valid nesting: a sub-list sits inside its parent's <li>
    assert "<a href='#s2-patching'>Patching</a><ol><li>" in nav and "</ol><ol>" not in nav and "</li><ol>" not in nav
    for anchor, title in links:
        m = re.search(rf"<section class='cl-section' id='{anchor}'>\n<h(\d)>([^<]*)</h\1>", page)
        assert m and m.group(2) == title.replace("&lt;", "<")
    # each result section says what was measured on which model and task, once (not a repeated heading)
    section = page[page.index("id='s1-head-scores'"):page.index("id='s2-patching'")]
    assert "metric: score · model: zoo/attn-only-2l · task: repeated tokens" in section
    assert section.count("Head scores") == 1
    assert "models: zoo/attn-only-2l, m · 3 interactive views" in page[:page.index("<nav")]  # the header


def test_report_without_views_carries_no_javascript(tmp_path):
    page = report([cl.Result(torch.rand(2, 2), ("layer", "head"))], tmp_path / "r.html").read_text()
    assert count_bundles(page) == 0 and "<script" not in page and len(page) < 20_000


def test_report_warns_about_network_references_and_rejects_unknown_items(tmp_path):
    with pytest.warns(UserWarning, match="refers to the network"):
        report([HTML("<img src='https://example.com/x.png'>")], tmp_path / "r.html")
    assert external_references("<script src=\"//cdn.example/x.js\"></script>")
    assert not external_references("<p>see https://example.com</p>")  # text, not a fetch
    with pytest.raises(InputError, match="to_html"):
        report([object()], tmp_path / "r.html")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report([cl.Result(torch.rand(2), ("head",))], tmp_path / "ok.html")


def test_every_analysis_result_renders_in_one_report(tmp_path):
    """Whatever the analysis modules return goes into a report: one section each, one bundle in all."""
    from circuitlab import attribution, ffn, induction, patching
    from circuitlab.metrics import LogitDiff

    attn = random_model("attn_only", seed=1, n_ctx=24)
    mlp = random_model("gpt2", seed=2, n_ctx=24)
    toks = torch.randint(1, 50, (2, 10), generator=torch.Generator().manual_seed(0))
    corrupted = toks.clone()
    corrupted[:, 3] = 7
    metric = LogitDiff(torch.tensor([5, 6]), torch.tensor([8, 9]))
    items = [
        induction.find_induction_circuit(attn, seq_len=8, n_seqs=2),
        patching.sweep(attn, toks, corrupted, metric, site="z", by=("layer", "head"), progress=False),
        attribution.direct_logit_attribution(attn, toks, 5, wrong=8, by="head"),
        attribution.logit_lens(attn, toks),
        ffn.value_tokens(mlp, 1, [0, 1, 2], k=4),
        ffn.sub_updates(mlp, toks, 1),
        ffn.key_examples(mlp, toks, 1, 0, k=3, progress=False),
    ]
    page = report(items, tmp_path / "all.html").read_text()
    # attention patterns, the value-token strip, the sub-updates' firing table and the key-example strip
    assert count_views(page) == 4
    assert count_bundles(page) == 1
    assert external_references(page) == []
    assert page.count("<section class='cl-section'") == len(items)


def test_top_tokens_from_scores_is_topk_with_strings_nested_like_values():
    from circuitlab.results import TopTokens

    scores = torch.randn(3, 2, 11, generator=torch.Generator().manual_seed(0))
    tt = TopTokens.from_scores(scores, 4, lambda ids: [f"w{i}" for i in ids.tolist()], axes=("layer", "batch", "rank"),
                               title="t")
    ref = scores.topk(4, dim=-1)
    assert torch.equal(tt.values, ref.values) and torch.equal(tt.token_ids, ref.indices)
    for li in range(3):
        for b in range(2):
            assert tt.tokens[li][b] == [f"w{i}" for i in ref.indices[li, b].tolist()]
            assert tt.row_tokens((li, b)) == tt.tokens[li][b]
    low = TopTokens.from_scores(scores, 2, lambda ids: [str(i) for i in ids.tolist()], axes=("layer", "batch", "rank"),
                                largest=False)
    assert torch.equal(low.token_ids, (-scores).topk(2, dim=-1).indices)
    df = tt.to_dataframe()
    assert len(df) == 3 * 2 * 4 and list(df.columns[-2:]) == ["token_id", "token"]
    row = df[(df.layer == 2) & (df.batch == 1) & (df["rank"] == 0)].iloc[0]
    assert row.token_id == int(ref.indices[2, 1, 0]) and row.token == f"w{int(ref.indices[2, 1, 0])}"
    assert row.value == pytest.approx(float(ref.values[2, 1, 0]))
    assert tt.labels["rank"] == ["#1", "#2", "#3", "#4"]
    html = tt.to_html()
    assert html.count("class='cl-chip'") == 3 * 2 * 4
    with pytest.raises(CircuitlabError, match="rank"):
        TopTokens(values=torch.zeros(2, 3), axes=("neuron", "k"), token_ids=torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(CircuitlabError, match="shape"):
        TopTokens(values=torch.zeros(2, 3), axes=("neuron", "rank"), token_ids=torch.zeros(3, dtype=torch.long))


def test_a_new_bundle_renders_and_converts_without_code_of_its_own():
    from dataclasses import dataclass

    from circuitlab.results import Bundle

    @dataclass(repr=False)
    class Pair(Bundle):
        first: Result
        second: Result
        note: str = "plain data is allowed"

    pair = Pair(Result(torch.arange(6.0).reshape(2, 3), ("layer", "head"), title="first one"),
                Result(torch.tensor([1.0, -1.0]), ("neuron",), title="second one"))
    assert list(pair.results()) == ["first", "second"]
    df = pair.to_dataframe()
    assert len(df) == 6 + 2 and set(df.result) == {"first", "second"}
    assert df[df.result == "first"].value.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    html = pair.to_html()
    assert "Pair" in html and "first one" in html and "second one" in html
    assert "first=Result(first one" in repr(pair)


def test_no_html_outside_render():
    """All HTML is written in circuitlab.render: no analysis or command module builds tags or inline styles."""
    import re
    from pathlib import Path

    import circuitlab

    root = Path(circuitlab.__file__).parent
    offenders = []
    for path in root.rglob("*.py"):
        if "render" in path.relative_to(root).parts:
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"<(table|div|span|ul|ol|li|pre|h[1-6]|p)[ >]|style=", line):
                offenders.append(f"{path.relative_to(root)}:{n}: {line.strip()}")
    assert offenders == []


# -- legibility: colour scales ----------------------------------------------------------------------------

def _rgb(hex_colour: str) -> tuple[int, int, int]:
    return tuple(int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))


def _legend(html: str) -> tuple[str, str, str]:
    """(low end text, gradient, high end text) of the first legend."""
    m = re.search(r"<div class='cl-legend'[^>]*><span>([^<]*)</span><span class='cl-legend-bar' "
                  r"style='background:linear-gradient\(to right, ([^)]*)\)'></span><span>([^<]*)</span>", html)
    assert m, html[-600:]
    return m.group(1), m.group(2), m.group(3)


def _reddish(hex_colour: str) -> bool:
    r, g, b = _rgb(hex_colour)
    return r > b + 20


def test_non_negative_scores_losses_and_probabilities_get_a_sequential_scale():
    scores = torch.tensor([[0.02, 0.9, 0.31, 0.0], [0.5, 0.07, 0.66, 0.12]])
    cases = [
        cl.Result(scores, ("layer", "head"), title="Induction score", metric="mean attention to the induction target"),
        cl.Result(scores * 0.4, ("layer", "head"), title="K-composition score", metric="|W_OV W_QK|_F / norms"),
        cl.Result(torch.tensor([0.64, 4.2, 3.9, 1.1]), ("ablated",), title="In-context loss with L1H1 ablated",
                  metric="mean cross-entropy (nats)"),
        cl.Result(torch.tensor([[0.1, 0.8], [0.05, 0.97]]), ("layer", "batch"), title="Logit lens: probability",
                  metric="probability"),
    ]
    for r in cases:
        html = r.to_html()
        lo, gradient, hi = _legend(html)
        # the scale runs from 0 (white), not from -max: nothing can be negative
        assert float(lo) == 0.0 and float(hi) == pytest.approx(float(r.values.max()), rel=1e-2), (r.title, lo, hi)
        stops = re.findall(r"#[0-9a-f]{6}", gradient)
        assert stops[0] == "#ffffff" and not any(_reddish(c) for c in stops), (r.title, gradient)
        backgrounds = [c["style"].split(";")[0].removeprefix("background:") for c in parse(html).cells]
        assert not any(_reddish(c) for c in backgrounds)
        # colour deepens with the value, and the smallest cell (0 where there is one) is the lightest
        order = r.values.flatten().argsort().tolist()
        light = [sum(_rgb(backgrounds[i])) for i in order]
        assert light == sorted(light, reverse=True), r.title


def test_signed_quantities_keep_a_diverging_scale_centred_on_zero():
    signed = [
        cl.Result(torch.tensor([[0.5, -1.5], [2.0, 0.0]]), ("layer", "head"), title="Activation patching",
                  metric="logit_diff"),
        # positive everywhere, but a logit difference and a patching effect are signed quantities
        cl.Result(torch.tensor([[0.5, 1.5], [2.0, 0.25]]), ("layer", "pos"), title="Residual patching",
                  metric="logit_diff"),
        cl.Result(torch.tensor([0.3, 1.2]), ("head",), title="Direct logit attribution per head",
                  metric="logit(' Mary') - logit(' John')"),
        # called a score, but the data is signed: a sequential scale could not show it
        cl.Result(torch.tensor([0.3, -1.2]), ("head",), title="Some score", metric="score"),
    ]
    for r in signed:
        lo, gradient, hi = _legend(r.to_html())
        vmax = float(r.values.abs().max())
        assert float(lo) == pytest.approx(-vmax, rel=1e-2) and float(hi) == pytest.approx(vmax, rel=1e-2), r.title
        stops = re.findall(r"#[0-9a-f]{6}", gradient)
        assert _reddish(stops[0]) and "#ffffff" in stops[1:-1] and not _reddish(stops[-1]), (r.title, gradient)


# -- legibility: section titles ---------------------------------------------------------------------------

def test_ablation_titles_name_the_ablated_heads():
    from circuitlab.induction import ablation_effect

    model = random_model("attn_only", seed=1, n_ctx=24)
    a = ablation_effect(model, ["L1H1", "L1H2"], method="mean", seq_len=6, n_seqs=2)
    b = ablation_effect(model, ["L0H0"], method="mean", seq_len=6, n_seqs=2)
    assert a.title != b.title
    assert "L1H1" in a.title and "L1H2" in a.title and "L0H0" in b.title and "mean" in a.title


def _headings(page: str) -> list[str]:
    return [re.sub(r"<[^>]+>", "", h) for _, h in re.findall(r"<h([1-4])[^>]*>(.*?)</h\1>", page, flags=re.S)]


def test_report_headings_and_anchors_are_distinct(tmp_path):
    from circuitlab import induction

    same = [cl.Result(torch.rand(2, 2), ("layer", "head"), title="Same title") for _ in range(3)]
    page = report([*same, Section("Same title", [cl.Result(torch.rand(2), ("head",), title="Same title")])],
                  tmp_path / "r.html").read_text()
    links = re.findall(r"<li><a href='#([^']+)'>([^<]+)</a>", page)
    titles = [t for _, t in links]
    assert len(titles) == 5 and len(set(titles)) == 5 and all(t.startswith("Same title") for t in titles)
    assert len({a for a, _ in links}) == 5
    ids = re.findall(r"\bid='([^']+)'", page)
    assert len(ids) == len(set(ids))
    headings = _headings(page)
    assert len(headings) == len(set(headings)), headings
    # a bundle that holds two results titled alike (the induction circuit's ablations, before they named
    # their heads) reads unambiguously in a report
    model = random_model("attn_only", seed=1, n_ctx=24)
    circuit = induction.find_induction_circuit(model, seq_len=8, n_seqs=2)
    page = report([circuit], tmp_path / "c.html").read_text()
    headings = _headings(page)
    assert len(headings) == len(set(headings)), headings


# -- legibility: token chips ------------------------------------------------------------------------------

def _chips(html: str) -> list[list[tuple[str, str]]]:
    """Per chip row: (shown text, hover title) of each chip."""
    rows = []
    for row in re.findall(r"<tr><th>[^<]*</th><td>(.*?)</td></tr>", html, flags=re.S):
        rows.append([(unescape(text), unescape(title)) for title, text in
                     re.findall(r"<span class='cl-chip'[^>]*title='([^']*)'>([^<]*)</span>", row)])
    return rows


def test_value_tokens_are_separate_chips_with_visible_whitespace():
    from circuitlab import ffn

    model = cl.load_model("zoo/toy-lm")
    vt = ffn.value_tokens(model, 1, [0, 5, 9], k=8)
    html = vt.to_html()
    rows = _chips(html)
    assert len(rows) == 6 and all(len(r) == 8 for r in rows)
    strings = [t for n in range(3) for t in vt.promoted.tokens[n] + vt.suppressed.tokens[n]]
    shown = [text for r in rows for text, _ in r]
    for s, text in zip(strings, shown):
        assert " " not in text and "\n" not in text and text  # whitespace is visible
        if s.startswith(" ") and "\ufffd" not in s:
            assert text == "\u00b7" + s[1:].replace(" ", "\u00b7")
    # the coloured strip: per neuron, its tokens with whitespace made visible, never two tokens run together
    (strip,) = [_view_props(sc) for sc in parse(html).scripts if "CircuitsVis.render(" in sc]
    tokens, values = strip["tokens"], strip["values"]
    starts = [i for i, t in enumerate(tokens) if t.startswith(" \u2016 N")]
    assert len(starts) == 3
    for k, (a, b) in enumerate(zip(starts, starts[1:] + [len(tokens)])):
        row = tokens[a + 1:b]
        assert len(row) == 2 * 16 - 1
        gaps, toks = row[1::2], row[0::2]
        assert all(g.strip() == "" and values[a + 1 + 2 * i + 1] == 0 for i, g in enumerate(gaps))
        assert all(t.strip() == t and " " not in t and "\n" not in t and t for t in toks)
        # promoted best first, then suppressed from least to most: the same labels as the chips
        assert toks == [t for t, _ in rows[2 * k]] + [t for t, _ in rows[2 * k + 1]][::-1]


def test_byte_tokens_show_their_bytes_not_the_replacement_character():
    from transformers.convert_slow_tokenizer import bytes_to_unicode  # GPT-2's byte-level alphabet

    from circuitlab.core import str_tokens
    from circuitlab.results import TopTokens, token_strings

    model = cl.load_model("zoo/toy-lm")
    tok = model.tokenizer
    byte_ids = [i for i in range(len(tok)) if "\ufffd" in tok.decode([i])][:6]
    assert len(byte_ids) == 6
    byte_of = {c: b for b, c in bytes_to_unicode().items()}
    pieces = tok.convert_ids_to_tokens(byte_ids)
    assert all(len(p) == 1 for p in pieces)  # single-byte pieces in this vocabulary
    expected = [f"<0x{byte_of[p]:02X}>" for p in pieces]
    assert token_strings(model, torch.tensor(byte_ids)) == expected
    # ordinary tokens are what the tokenizer decodes them to
    assert token_strings(model, torch.tensor([300, 301])) == [tok.decode([300]), tok.decode([301])]
    assert token_strings(None, torch.tensor([3, 4])) == ["#3", "#4"]

    # a TopTokens whose labels came out as U+FFFD (core.str_tokens) still shows each byte token apart
    scores = torch.full((1, len(tok)), -1.0)
    scores[0, byte_ids] = torch.linspace(2.0, 1.0, 6)
    tt = TopTokens.from_scores(scores, 6, lambda ids: str_tokens(model, ids), axes=("neuron", "rank"), title="bytes")
    shown = [text for r in _chips(tt.to_html()) for text, _ in r]
    assert len(shown) == 6 and len(set(shown)) == 6 and not any("\ufffd" in t for t in shown)

    # the sub-updates' table and chips too
    from circuitlab import ffn

    su = ffn.sub_updates(model, "The cat sat on the", 1, k=3)
    su.promotes.tokens[0][0][0] = "\ufffd"  # as core.str_tokens labels a byte token
    assert "\ufffd" not in su.to_html()


# -- legibility: top and bottom never list the same item ------------------------------------------------

def test_topk_view_on_a_short_prompt_lists_each_position_once():
    acts = torch.randn(2, 4, 3, generator=torch.Generator().manual_seed(0))  # 4 positions, k = 5
    props = topk_tokens([["a", "b", "c", "d"]], [acts], k=5).props
    top, bottom = torch.as_tensor(props["topkIdxs"][0]), torch.as_tensor(props["bottomkIdxs"][0])
    for layer in range(2):
        for n in range(3):
            listed = top[layer, :, n].tolist() + bottom[layer, :, n].tolist()
            assert sorted(listed) == [0, 1, 2, 3]  # every position, once
            ranked = acts[layer, :, n].argsort(descending=True).tolist()
            assert listed == ranked  # top first, then bottom, in rank order
    # one position: listed once, under top
    props = topk_tokens([["a"]], [torch.randn(1, 1, 2)], k=3).props
    assert torch.as_tensor(props["topkIdxs"][0]).shape[1] == 1 and torch.as_tensor(props["bottomkIdxs"][0]).numel() == 0


def test_value_tokens_over_a_small_vocabulary_list_each_token_once():
    from circuitlab import ffn

    mlp = random_model("gpt2", seed=2, n_ctx=24)  # 50 tokens; k = 40 promoted and 40 suppressed overlap
    vt = ffn.value_tokens(mlp, 1, [0, 3], k=40)
    rows = _chips(vt.to_html())
    assert len(rows) == 4
    for plus, minus in (rows[0:2], rows[2:4]):
        texts = [t for t, _ in plus] + [t for t, _ in minus]
        assert len(texts) == len(set(texts)) == 50


# -- legibility: (layer, pos) heatmaps --------------------------------------------------------------------

def _contrast(a: str, b: str) -> float:
    """WCAG 2 contrast ratio of two #rrggbb colours."""
    def lum(c):
        ch = [x / 255 for x in _rgb(c)]
        ch = [x / 12.92 if x <= 0.04045 else ((x + 0.055) / 1.055) ** 2.4 for x in ch]
        return 0.2126 * ch[0] + 0.7152 * ch[1] + 0.0722 * ch[2]
    hi, lo = sorted((lum(a), lum(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def test_layer_pos_heatmaps_print_each_value_in_a_readable_colour():
    toks = [f"{i}:' tok{i}'" for i in range(30)]  # a resid_pre sweep over a 30-token prompt
    vals = torch.linspace(-1, 1, 12 * 30)[torch.randperm(360, generator=torch.Generator().manual_seed(0))]
    r = cl.Result(vals.reshape(12, 30), ("layer", "pos"), labels={"pos": toks}, title="Residual patching",
                  metric="logit_diff")
    html = r.to_html()
    cells = re.findall(r"<td class='cl-cell[^']*' title='[^']*' data-value='([^']*)' style='([^']*)'>([^<]*)</td>",
                       html)
    assert len(cells) == 360
    for value, style, text in cells:
        assert text and float(text) == pytest.approx(float(value), abs=6e-3)  # the value, in the cell
        css = dict(part.split(":") for part in style.split(";"))
        assert _contrast(css["background"], css["color"]) >= 4.5, (value, css)
    # long position labels are written vertically; a grid too big to number shows colour only
    assert all("cl-colv" in cls for cls, _ in parse(html).headers if "cl-col" in cls)
    big = cl.Result(torch.randn(12, 40), ("layer", "pos")).to_html()
    assert "cl-compact" in big and not re.search(r"<td class='cl-cell[^>]*>[^<]+</td>", big)


# -- the bundle and the stylesheet: once per page ---------------------------------------------------------

def test_every_kind_carries_the_bundle_and_stylesheet_once(tmp_path):
    from circuitlab import attribution, ffn, induction, patching
    from circuitlab.metrics import LogitDiff
    from circuitlab.render.bundle import raw_bundle

    attn = random_model("attn_only", seed=1, n_ctx=24)
    mlp = random_model("gpt2", seed=2, n_ctx=24)
    toks = torch.randint(1, 50, (2, 10), generator=torch.Generator().manual_seed(0))
    corrupted = toks.clone()
    corrupted[:, 3] = 7
    sub = ffn.sub_updates(mlp, toks, 1)
    items = [
        induction.find_induction_circuit(attn, seq_len=8, n_seqs=2),
        patching.sweep(attn, toks, corrupted, LogitDiff(torch.tensor([5, 6]), torch.tensor([8, 9])), site="z",
                       by=("layer", "head"), progress=False),
        attribution.direct_logit_attribution(attn, toks, 5, wrong=8, by="head"),
        attribution.logit_lens(attn, toks),
        ffn.value_tokens(mlp, 1, [0, 1, 2], k=4),
        sub, sub.promotes,
        ffn.key_examples(mlp, toks, 1, 0, k=3, progress=False),
    ]
    bundle = raw_bundle()
    # pieces from the start, middle and end of the bundle: any copy, however it was pasted, has all three
    markers = [bundle[:200], bundle[len(bundle) // 2: len(bundle) // 2 + 200], bundle[-400:-200]]

    def copies(page: str) -> list[int]:
        return [page.count(m) for m in markers]

    for item in items:  # stand-alone (Jupyter): one stylesheet, and the bundle once if anything mounts a view
        html = item.to_html()
        assert html.count("<style>") == 1, type(item).__name__
        assert copies(html) == [1 if count_views(html) else 0] * 3, type(item).__name__
    page = report(items, tmp_path / "all.html").read_text()
    assert copies(page) == [1, 1, 1] and page.count("<style>") == 1
    # the FFN command's report (sub-updates, value tokens, key examples)
    page = report([sub, ffn.value_tokens(mlp, 1, 3, k=5), ffn.key_examples(mlp, toks, 1, 3, k=2, progress=False)],
                  tmp_path / "ffn.html").read_text()
    assert copies(page) == [1, 1, 1] and page.count("<style>") == 1
