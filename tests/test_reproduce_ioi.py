"""reproduce/ioi.py, finding "ioi-name-movers" (Wang et al. 2022): the measurement on zoo/toy-lm against
independent computations, the verdict against its rule recomputed from the values, and the real models."""

from __future__ import annotations

from collections import defaultdict

import pytest
import torch

import circuitlab
from circuitlab import reproduce
from circuitlab.attribution import direct_logit_attribution
from circuitlab.metrics import LogitDiff
from circuitlab.patching import path_patch
from circuitlab.reproduce import ioi
from circuitlab.tasks import toy_world as facts
from circuitlab.testing import need_real_model
from circuitlab.zoo import toy_lm

FINDING_ID = "ioi-name-movers"


@pytest.fixture(scope="module")
def toy():
    return circuitlab.load_model("zoo/toy-lm")


@pytest.fixture(scope="module")
def toy_run():
    return reproduce.run(FINDING_ID, model="zoo/toy-lm")


@pytest.fixture(scope="module")
def by_length(toy):
    """The seed-0 prompts' indices grouped by token length (a batch shares one length)."""
    groups = defaultdict(list)
    for i, p in enumerate(ioi.ioi_prompts(toy, seed=0)):
        groups[toy.to_tokens(p["clean"]).shape[1]].append(i)
    return list(groups.values())


def verdict_from_values(v: dict) -> str:
    """The rule, recomputed from ``values`` alone (layers read back from the head labels)."""
    a = v["mean_logit_diff"] > 0 and v["preferred_fraction"] >= 0.8
    layers = [int(label[1:label.index("H")]) for label in v["top_heads"]]
    b = all(layer >= v["n_layers"] / 2 for layer in layers) and v["top_share"] >= 0.5
    c = all(io > s for io, s in zip(v["attn_to_io"], v["attn_to_s"]))
    return "reproduced" if a and b and c else "partly" if a and (b or c) else "not reproduced"


def head_of(label: str) -> tuple[int, int]:
    return int(label[1:label.index("H")]), int(label[label.index("H") + 1:])


def test_finding_is_registered_with_its_source_and_rule():
    f = reproduce.get_finding(FINDING_ID)
    assert f.models[0] == "gemma-3-270m" and set(f.models) == {"gemma-3-270m", "smollm2-135m", "zoo/toy-lm"}
    assert "2211.00593" in f.citation.url and f.citation.year == 2022
    assert "3.56" in f.published and "9.9, 9.6, 10.0" in f.published
    assert f.published_model == "gpt2-small"
    for piece in (">= 80%", "last half", ">= 50%", "partly", "not judged"):
        assert piece in f.rule


def test_toy_lm_run_gives_a_row_and_follows_the_rule(toy_run):
    row = toy_run.row()
    assert row["finding"] == FINDING_ID and row["model"] == "zoo/toy-lm (differs)"
    assert row["verdict"] == verdict_from_values(toy_run.measurement.values)
    v = toy_run.measurement.values
    assert v["n_prompts"] == ioi.N_PROMPTS == len(v["per_prompt_logit_diff"])
    assert toy_run.verdict == verdict_from_values(v)
    assert v["top_layers_late"] == [head_of(x)[0] >= v["n_layers"] / 2 for x in v["top_heads"]]
    assert len(toy_run.measurement.evidence) == 4  # DLA heatmap, attention, path-patching sweep, all senders


def test_toy_lm_prompts_are_the_worlds_ioi_sentences(toy):
    world = facts.load_world(toy_lm.zoo_dir())
    test_names = {frozenset(p) for p in world.ioi_test_pairs}
    prompts = ioi.ioi_prompts(toy, seed=0)
    assert prompts == ioi.ioi_prompts(toy, seed=0) and prompts != ioi.ioi_prompts(toy, seed=1)
    for p in prompts:
        io, s = p["io"].strip(), p["s"].strip()
        assert frozenset((io, s)) in test_names  # held-out pairs only
        built = {facts.ioi_sentence(world, io, s, first, p["template"], place, obj)[0]
                 for first in (True, False) for place in world.ioi_places for obj in world.ioi_objects}
        assert p["clean"] in built
        # ABC: the same sentence with all three names replaced by names other than IO and S
        clean_words, corrupt_words = p["clean"].replace(",", "").split(), p["corrupted"].replace(",", "").split()
        differ = [(c, d) for c, d in zip(clean_words, corrupt_words) if c != d]
        assert len(clean_words) == len(corrupt_words) and len(differ) == 3
        assert all(d in world.ioi_names and d not in (io, s) for _, d in differ)
        assert len({d for _, d in differ}) == 3


def test_mean_logit_diff_against_the_models_own_logits(toy, toy_run, by_length):
    tok = toy.tokenizer
    prompts = ioi.ioi_prompts(toy, seed=0)
    diffs = [0.0] * len(prompts)
    for idx in by_length:
        with torch.no_grad():
            logits = toy(toy.to_tokens([prompts[i]["clean"] for i in idx]))[:, -1]
        for row, i in enumerate(idx):
            io, s = (tok.encode(prompts[i][k], add_special_tokens=False)[0] for k in ("io", "s"))
            diffs[i] = (logits[row, io] - logits[row, s]).item()
    v = toy_run.measurement.values
    assert v["per_prompt_logit_diff"] == pytest.approx(diffs, abs=1e-4)
    assert v["mean_logit_diff"] == pytest.approx(sum(diffs) / len(diffs), abs=1e-4)
    assert v["preferred_fraction"] == pytest.approx(sum(d > 0 for d in diffs) / len(diffs))


def test_top_heads_and_attention_against_direct_logit_attribution_and_a_cache(toy, toy_run, by_length):
    prompts = ioi.ioi_prompts(toy, seed=0)
    total = torch.zeros(toy.cfg.n_layers, toy.cfg.n_heads)
    for idx in by_length:
        group = [prompts[i] for i in idx]
        res = direct_logit_attribution(toy, [p["clean"] for p in group], [p["io"] for p in group],
                                       wrong=[p["s"] for p in group], by="head")
        total += res.values * len(group)
    mean = total / len(prompts)
    v = toy_run.measurement.values
    order = mean.flatten().argsort(descending=True)[:3].tolist()
    expect = [f"L{i // toy.cfg.n_heads}H{i % toy.cfg.n_heads}" for i in order]
    assert v["top_heads"] == expect
    assert v["top_head_dla"] == pytest.approx([mean.flatten()[i].item() for i in order], abs=1e-4)
    positive = mean.clamp(min=0).sum().item()
    assert v["top_share"] == pytest.approx(sum(max(x, 0) for x in v["top_head_dla"]) / positive, abs=1e-5)

    # attention from the last position, read from a full cache, positions found from the string tokens
    to_io, to_s = torch.zeros(3), torch.zeros(3)
    for idx in by_length:
        toks = toy.to_tokens([prompts[i]["clean"] for i in idx])
        with torch.no_grad():
            _, cache = toy.run_with_cache(toks)
        for row, i in enumerate(idx):
            strs = toy.to_str_tokens(toks[row])
            io_at = [j for j, t in enumerate(strs) if t == prompts[i]["io"]]
            s_at = [j for j, t in enumerate(strs) if t == prompts[i]["s"]]
            assert len(io_at) == 1 and len(s_at) == 2
            for k, label in enumerate(v["top_heads"]):
                layer, head = head_of(label)
                last = cache["pattern", layer][row, head, -1]
                to_io[k] += last[io_at].sum() / len(prompts)
                to_s[k] += last[s_at].sum() / len(prompts)
    assert v["attn_to_io"] == pytest.approx(to_io.tolist(), abs=1e-5)
    assert v["attn_to_s"] == pytest.approx(to_s.tolist(), abs=1e-5)


def test_path_patching_figures_match_a_separate_path_patch(toy, toy_run, by_length):
    v = toy_run.measurement.values
    sweep = toy_run.measurement.evidence[2]
    assert sweep.axes == ("layer", "head") and sweep.meta["direction"] == "noising"
    receiver = head_of(v["path_receiver"][:-2])
    assert v["path_receiver"] == v["top_heads"][0] + ".q"
    # the strongest sender is the largest drop among heads before the receiver
    effects = sweep.values[: receiver[0]] - sweep.meta["clean_value"]
    i = int(effects.flatten().argmin())
    assert v["path_strongest_sender"] == f"L{i // toy.cfg.n_heads}H{i % toy.cfg.n_heads}"
    # the same sender path-patched alone, on the same prompts
    prompts = ioi.ioi_prompts(toy, seed=0)
    n = v["path_n_prompts"]
    idx = max(by_length, key=len)
    group = [prompts[i] for i in idx]
    assert len(group) == n
    # the clean value of the path-patching runs is the mean logit difference over those prompts
    diffs = v["per_prompt_logit_diff"]
    assert v["path_clean_value"] == pytest.approx(sum(diffs[i] for i in idx) / n, abs=1e-4)
    metric = LogitDiff([p["io"] for p in group], [p["s"] for p in group])
    alone = path_patch(toy, [p["clean"] for p in group], [p["corrupted"] for p in group], metric,
                       senders=v["path_strongest_sender"], receivers=v["path_receiver"], direction="noising",
                       freeze_mlps=False, progress=False)
    assert float(alone.values[0]) - alone.meta["clean_value"] == pytest.approx(v["path_strongest_effect"], abs=1e-4)


def test_path_patching_is_skipped_when_asked_and_the_verdict_does_not_change(toy, toy_run):
    m = ioi.measure(toy, 0, path_patching=False)
    assert m.verdict == toy_run.verdict and "not run" in m.figures
    assert len(m.evidence) == 2


# ------------------------------------------------------------------------------------------------ real models

@pytest.mark.real
@pytest.mark.slow
@pytest.mark.parametrize("name", ["gemma-3-270m", "smollm2-135m"])
def test_real_model_gives_a_verdict(name):
    need_real_model(name)
    r = reproduce.run(FINDING_ID, model=name)
    print(r.row())
    print(r.measurement.why)
    assert r.verdict in reproduce.VERDICTS
    v = r.measurement.values
    if r.verdict != "not applicable":
        assert v["n_prompts"] == ioi.N_PROMPTS and r.verdict == verdict_from_values(v)
        assert "not run" in v["path_text"]  # the sweep is too slow here by default (see ioi.PATH_BUDGET_FLOP)
