"""Rendering: heatmaps show the right numbers in the right cells, views carry their data, reports are
self-contained with circuitsvis's JavaScript exactly once."""

from __future__ import annotations

import json
import re
import warnings
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
    assert [c["style"] for c in p.cells] == [f"background:{x}" for x in ("#2563eb", "#dc2626", "#ffffff", "#d4d4d4")]


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
