"""circuitlab.reproduce: the registry, the run, the command, and the findings measured on the zoo.

Each zoo finding's verdict is recomputed here from the numbers its measurement returns, with the rule written out
again independently, and its key numbers are checked against direct computations (cross-entropy from the model's
own logits, head scores, composition scores from TransformerLens's weights). The findings of the real models are
tested in their own files (``tests/test_reproduce_*.py``).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import circuitlab as cl
from circuitlab import induction, reproduce
from circuitlab.cli import main
from circuitlab.errors import CircuitlabError
from circuitlab.reproduce import Finding, Measurement
from circuitlab.reproduce.registry import _FINDINGS

README = Path(__file__).resolve().parents[1] / "README.md"


def test_every_finding_states_its_source_claim_figure_models_and_rule():
    found = reproduce.findings()
    assert {"induction-heads-need-two-layers", "induction-reads-previous-token-heads"} <= set(found)
    for fid, f in found.items():
        assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)+", fid), fid
        assert f.citation.authors and 1990 < f.citation.year < 2100 and f.citation.title and f.citation.where
        assert f.claim.endswith(".") and f.published and f.published_model and f.rule and f.seconds > 0
        assert f.models and all(isinstance(m, str) for m in f.models)


def test_registry_refuses_a_second_finding_with_the_same_id_and_names_the_known_ones():
    f = reproduce.get_finding("induction-heads-need-two-layers")
    twin = Finding(**{**f.__dict__, "claim": "another claim."})
    with pytest.raises(CircuitlabError, match="two findings are registered"):
        reproduce.register(twin)
    assert _FINDINGS[f.id] is f
    with pytest.raises(CircuitlabError, match="induction-heads-need-two-layers"):  # a near miss names the id
        reproduce.get_finding("induction-heads-need-2-layers")
    with pytest.raises(CircuitlabError, match="reproduce --list") as err:  # the error stays one short line
        reproduce.get_finding("no-such-finding")
    assert len(str(err.value)) < 300
    with pytest.raises(ValueError):
        Measurement("x", "probably", "")


# -- induction heads need two layers ---------------------------------------------------------------------------

def _cross_entropy_halves(model, tokens, prefix, n):
    logits = model(tokens)
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), tokens[:, 1:].flatten(),
                                             reduction="none").reshape(tokens.shape[0], -1)
    return float(loss[:, prefix : prefix + n - 1].mean()), float(loss[:, prefix + n : prefix + 2 * n - 1].mean())


def test_induction_needs_two_layers_on_the_zoo():
    r = reproduce.run("induction-heads-need-two-layers")
    v = r.measurement.values
    assert r.model == "zoo/attn-only-2l" and r.seed == 0 and not r.same_model
    # the rule, written again: two layers have an induction head, one layer has none; ablation removes >= 50%
    a = v["best_induction"] >= 0.3 and v["best_induction_one_layer"] < 0.3
    drop = v["first_half_loss"] - v["repeated_half_loss"]
    removed = (v["ablated_loss"] - v["repeated_half_loss"]) / drop
    b = removed >= 0.5
    assert r.verdict == ("reproduced" if a and b else "partly" if a or b else "not reproduced")
    assert abs(removed - v["drop_removed"]) < 0.02  # ablation_effect's baseline is the same repeated-half loss
    # independent numbers: the scores from head_scores, the losses from cross-entropy on the model's logits
    two, one = cl.load_model("zoo/attn-only-2l"), cl.load_model("zoo/attn-only-1l")
    assert abs(v["best_induction"] - float(induction.head_scores(two, n_seqs=20, seed=0).values.max())) < 1e-6
    assert abs(v["best_induction_one_layer"] - float(induction.head_scores(one, n_seqs=20, seed=0).values.max())) < 1e-6
    rep = induction.repeated_sequences(two, n_seqs=20, seed=0)
    first, second = _cross_entropy_halves(two, rep.tokens, rep.prefix, rep.seq_len)
    assert abs(first - v["first_half_loss"]) < 1e-4 and abs(second - v["repeated_half_loss"]) < 1e-4
    # a different seed draws different sequences, and says so
    assert reproduce.run("induction-heads-need-two-layers", seed=3).measurement.values["first_half_loss"] != first


def test_a_one_layer_model_is_not_applicable_rather_than_a_failure():
    r = reproduce.run("induction-heads-need-two-layers", model="zoo/attn-only-1l")
    assert r.verdict == "not applicable" and "1 layer" in r.measurement.why


# -- induction heads read previous-token heads -----------------------------------------------------------------

def test_induction_reads_previous_token_heads_on_the_zoo():
    r = reproduce.run("induction-reads-previous-token-heads")
    v = r.measurement.values
    model = cl.load_model("zoo/attn-only-2l")
    prev = {f"L{l}H{h}" for l, h in v["previous_token_heads"]}
    # the strongest writer into each induction head, from TransformerLens's own composition scores
    comp = model.all_composition_scores("K")  # [writer layer, writer head, reader layer, reader head]
    hits = 0
    for row, (layer, head) in zip(v["rows"], v["induction_heads"]):
        earlier = comp[:layer, :, layer, head]
        i = int(earlier.argmax())
        best = f"L{i // model.cfg.n_heads}H{i % model.cfg.n_heads}"
        assert row["strongest_writer"] == best
        assert abs(row["k_composition"] - float(earlier.max())) < 1e-4
        hits += best in prev
    n = len(v["rows"])
    assert r.verdict == ("reproduced" if hits == n else "partly" if hits else "not reproduced")


# -- the command -----------------------------------------------------------------------------------------------

def test_cli_lists_runs_and_reports(tmp_path, capsys, monkeypatch):
    assert main(["reproduce", "--list"]) == 0
    listed = capsys.readouterr().out
    for fid in reproduce.findings():
        assert fid in listed
    out = tmp_path / "r" / "repro.html"
    assert main(["reproduce", "induction-heads-need-two-layers", "-o", str(out), "-q"]) == 0
    text = capsys.readouterr().out
    # the verdict printed is the rule's on this run's numbers (seed 0, the default model), recomputed here
    v = reproduce.run("induction-heads-need-two-layers").measurement.values
    a = v["best_induction"] >= 0.3 and v["best_induction_one_layer"] < 0.3
    drop = v["first_half_loss"] - v["repeated_half_loss"]
    b = (v["ablated_loss"] - v["repeated_half_loss"]) / drop >= 0.5
    want = "reproduced" if a and b else "partly" if a or b else "not reproduced"
    assert f"]  {want.upper()}  (" in text
    assert "seed 0" in text and "not the published model" in text and "zoo/attn-only-2l" in text
    page = out.read_text()
    assert "Elhage et al." in page and "Rule, fixed in advance" in page
    # --all runs every finding on its default model (here four of the zoo's quick ones, for speed: every finding
    # has tests of its own, and the zoo's all together take minutes)
    quick = ("induction-heads-need-two-layers", "induction-reads-previous-token-heads", "ffn-few-sub-updates-dominate",
             "one-layer-bigrams-skip-trigrams")
    zoo = {k: f for k, f in reproduce.findings().items() if k in quick}
    assert len(zoo) == len(quick)
    monkeypatch.setattr("circuitlab.reproduce.findings", lambda: zoo)
    assert main(["reproduce", "--all", "--markdown", "-q"]) == 0
    table = capsys.readouterr().out
    assert table.count("| `") == len(zoo)


def test_readme_reproduce_table_lists_every_finding():
    text = README.read_text()
    section = text[text.index("## Reproductions"):]
    section = section[: section.index("\n## ", 3)] if "\n## " in section[3:] else section
    for fid in reproduce.findings():
        assert f"`{fid}`" in section, f"README's reproduce table lacks {fid}: regenerate it with " \
                                      "`circuitlab reproduce --all --markdown`"


# -- FFN sub-updates ---------------------------------------------------------------------------------------------

def test_few_sub_updates_dominate_on_toy_lm():
    r = reproduce.run("ffn-few-sub-updates-dominate")
    v = r.measurement.values
    assert r.model == "zoo/toy-lm"
    ratio = v["median_share"] / (10 / 512)
    assert abs(ratio - v["ratio"]) < 1e-6
    assert r.verdict == ("reproduced" if ratio >= 10 else "partly" if ratio >= 3 else "not reproduced")
    # one share by hand: the MLP's post-activations from the cache and the value vectors' norms
    from circuitlab.reproduce.logit_lens import prompts_for

    model = cl.load_model("zoo/toy-lm")
    prompt, layer = prompts_for(model)[0], v["layers"][0]
    _, cache = model.run_with_cache(prompt)
    m = cache[f"blocks.{layer}.mlp.hook_post"][0, -1]
    score = m.abs() * model.blocks[layer].mlp.W_out.norm(dim=-1)
    share = float(score.topk(10).values.sum() / score.sum())
    assert abs(share - v["shares"][layer][0]) < 1e-5
    assert reproduce.run("ffn-few-sub-updates-dominate", model="zoo/attn-only-2l").verdict == "not applicable"


def test_run_takes_a_loaded_model_and_says_when_no_seed_is_used():
    model = cl.load_model("zoo/toy-lm")
    r = reproduce.run("ffn-few-sub-updates-dominate", model=model)
    assert r.model == "zoo/toy-lm" and r.row()["seed"] == "none" and not r.finding.uses_seed
    assert reproduce.run("induction-heads-need-two-layers",
                         model=cl.load_model("zoo/attn-only-2l")).row()["seed"] == "0"


# -- FFN keys and values -----------------------------------------------------------------------------------------

def test_values_predict_the_token_after_their_keys_top_trigger_on_toy_lm():
    from circuitlab.core import unembed_matrix
    from circuitlab.reproduce import ffn_keys_values as F

    r = reproduce.run("ffn-values-predict-next-token-in-upper-layers")
    v = r.measurement.values
    lower, upper = sum(v["rates"][:2]) / 2, sum(v["rates"][2:]) / 2
    rises, above = upper > lower, upper >= 10 / 4096
    assert r.verdict == ("reproduced" if rises and above else "partly" if rises or above else "not reproduced")
    # one layer by brute force: every line alone, every position's activation; identical contexts repeat in the
    # corpus, so a neuron's maximum may be reached at several positions (equal up to float rounding): the measured
    # next token must be one of the tokens after them, and where there is only one, the same
    model = cl.load_model("zoo/toy-lm")
    layer, neurons = 2, v["neurons"][2]
    acts, after = [], []
    for line in F.corpus(model, 0):
        toks = model.to_tokens(line)
        _, cache = model.run_with_cache(toks)
        acts.append(cache[f"blocks.{layer}.mlp.hook_post"][0, 1:-1, neurons])  # positions with a next token, no BOS
        after.append(toks[0, 2:])
    acts, after = torch.cat(acts), torch.cat(after)  # [positions, neurons], [positions]
    top = (model.blocks[layer].mlp.W_out[neurons] @ unembed_matrix(model)).argmax(-1)
    agree = 0
    for i in range(len(neurons)):
        tied = set(after[acts[:, i] >= acts[:, i].max() - 1e-5].tolist())
        assert v["following"][2][i] in tied
        agree += int(top[i]) == v["following"][2][i]
    assert abs(agree / len(neurons) - v["rates"][2]) < 1e-9

