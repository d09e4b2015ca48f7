"""The finding "edge-probing-pipeline-order": its verdict against the rule written out again from the finding's
text, and its registration."""

from __future__ import annotations

import itertools

from circuitlab import reproduce
from circuitlab.reproduce import edge_probing as F


def rule(pos: float, deprel: float, ent: float) -> str:
    # the rule as the finding states it: POS < dependency label < entity type, or only POS < entity type
    if pos < deprel and deprel < ent:
        return "reproduced"
    if pos < ent:
        return "partly"
    return "not reproduced"


def test_verdict_is_the_stated_rule_for_every_order():
    for values in itertools.permutations([1.0, 2.0, 3.0]):
        cog = dict(zip(("pos", "deprel", "ent"), values))
        assert F.order_judge(cog)[0] == rule(*values), cog
    assert F.order_judge({"pos": 2.0, "deprel": 2.0, "ent": 3.0})[0] == "partly"  # ties do not count as in order


def test_registered_with_its_source_and_rule():
    f = reproduce.get_finding("edge-probing-pipeline-order")
    assert f.models[0] == "minilm-l6" and "1905.05950" in f.citation.url
    assert "Written after MiniLM's figures were seen" in f.rule
