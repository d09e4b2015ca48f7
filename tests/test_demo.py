"""The demo: its task is built right, its numbers obey exact identities, its report is complete, and the CLI
reaches it. One shared run (see demo_output.py)."""

from __future__ import annotations

import re

import pytest
import torch

import circuitlab
from circuitlab.commands import demo as demo_cmd
from circuitlab.render import count_views, external_references
from circuitlab.render.bundle import count_bundles
from circuitlab.tasks import copy_task
from circuitlab.testing import random_model
from demo_output import demo_run

pytestmark = pytest.mark.slow


def test_copy_task_differs_only_where_it_says():
    model = random_model("attn_only", n_ctx=64, d_vocab=101)
    task = copy_task(model, n_prompts=5, seq_len=12, k=7, seed=3)
    n, k = 12, 7
    from circuitlab.induction import bos_token_id

    bos = bos_token_id(model)
    pre = 0 if bos is None else 1
    assert task.clean.shape == (5, pre + n + k)
    diff = (task.clean != task.corrupted).nonzero()[:, 1]
    assert diff.tolist() == [task.changed_pos] * 5 and task.changed_pos == pre + k
    for b in range(5):
        row = task.clean[b].tolist()
        # the prompt ends on the second copy of r_k; the answer is what followed r_k in the first copy
        assert row[pre:pre + k] == row[pre + n:]
        assert row[pre + k - 1] == row[-1] and task.answer[b] == row[pre + k]
        assert int(task.wrong[b]) not in row and int(task.wrong[b]) != bos


def test_demo_prints_findings_and_writes_a_complete_report():
    run = demo_run()
    out, page = run.output, run.outcome.path.read_text()
    print(f"\ndemo: {run.seconds:.1f} s, report {run.outcome.report_bytes / 1e6:.2f} MB, {run.outcome.n_views} views")
    assert out.startswith("Headline findings on ")
    m = re.search(r"wrote (.+) \(([\d.]+) MB, (\d+) interactive views\) in ([\d.]+) s", out)
    assert m and int(m.group(3)) == count_views(page) == run.outcome.n_views
    assert count_bundles(page) == 1 and external_references(page) == []
    sections = re.findall(r"<section class='cl-section' id='[^']+'>\n<h2>([^<]+)</h2>", page)
    assert sections[0] == "Headline findings"
    for title in ("Induction circuit", "Activation patching", "Direct logit attribution"):
        assert title in sections, sections
    if "zoo/toy-lm" in circuitlab.list_models():
        assert "FFN key-value memories" in sections
    else:
        assert "FFN key-value memories" not in sections and "skipped FFN" in out


def test_demo_patching_obeys_exact_identities():
    """The demo's residual sweep is the fraction of the clean logit difference recovered: the raw sweep, rescaled.
    Layer-0 residual patching: positions that are identical in the two prompts change nothing (0 of the clean
    logit difference recovered) and the one differing position restores the clean value exactly (1)."""
    from circuitlab.metrics import LogitDiff
    from circuitlab.patching import sweep

    run = demo_run()
    section = next(s for s in run.outcome.items if getattr(s, "title", "") == "Activation patching")
    resid = section.items[0]
    assert resid.axes == ("layer", "pos") and "recovered" in resid.metric
    model = circuitlab.load_model(run.model)
    task = copy_task(model, seed=0)
    raw = sweep(model, task.clean, task.corrupted, LogitDiff(task.answer, task.wrong), site="resid_pre",
                by=("layer", "pos"), progress=False)
    clean, corrupted = raw.meta["clean_value"], raw.meta["corrupted_value"]
    torch.testing.assert_close(resid.values, (raw.values - corrupted) / (clean - corrupted))
    changed = int(re.search(r"\(pos (\d+)\)", resid.task).group(1))
    layer0 = resid.values[0]
    others = torch.cat([layer0[:changed], layer0[changed + 1:]])
    torch.testing.assert_close(others, torch.zeros_like(others), atol=1e-4, rtol=0)
    assert abs(float(layer0[changed]) - 1) < 1e-4


def test_demo_finds_the_zoo_models_induction_circuit():
    run = demo_run()
    if not run.on_zoo:
        pytest.skip("zoo/attn-only-2l is not installed; the demo ran on a random model")
    findings = " | ".join(run.outcome.findings)
    assert "induction heads (score" in findings and "no induction heads" not in findings
    m = re.search(r"in-context loss from ([\d.]+) to ([\d.]+) nats \(chance ([\d.]+)\)", findings)
    baseline, ablated, chance = (float(g) for g in m.groups())
    # the model copies in context (well below chance), and without its induction heads it stops doing so
    assert baseline < chance - 1 and ablated - baseline > 0.25 * chance
    m = re.search(r"logit difference \(answer - corrupted answer\) ([-+\d.]+) clean, ([-+\d.]+) corrupted",
                  findings)
    assert m and float(m.group(1)) > 0 > float(m.group(2))


def test_cli_runs_the_demo_with_its_options(monkeypatch, tmp_path, capsys):
    calls = []
    monkeypatch.setattr(demo_cmd, "run_demo", lambda *a, **kw: calls.append((a, kw)))
    from circuitlab.cli import main

    assert main(["demo", "--model", "zoo/x", "--out", str(tmp_path / "r.html"), "--seed", "3", "--quiet",
                 "--no-ffn"]) == 0
    assert calls == [(("zoo/x", str(tmp_path / "r.html")), {"seed": 3, "progress": False, "ffn": False})]
    assert main(["demo", "-m", "zoo/y", "-o", str(tmp_path / "s.html"), "-q"]) == 0
    assert calls[1] == (("zoo/y", str(tmp_path / "s.html")), {"seed": 0, "progress": False, "ffn": True})
    monkeypatch.undo()
    capsys.readouterr()
    assert main(["demo", "--model", "zoo/not-a-model", "--out", str(tmp_path / "r.html"), "-q"]) == 1
    err = capsys.readouterr().err
    assert "zoo/not-a-model" in err and "zoo/attn-only-2l" in err  # names the model and what the zoo holds
    assert not (tmp_path / "r.html").exists()
