"""Word lists: small closed sets of English words, written for this package, used as token-level concepts.

Compositional neuron explanations (:mod:`circuitlab.neurons.compositional`) search formulas over concepts that
mark words; besides the annotations a sentence carries (UPOS, dependency label, entity type) they use these lists
("the word is a negation", "the word names a colour"). Each list is lower-case, and a word matches a list when
its lower-cased form is in it. The lists are short on purpose: they name ideas that part-of-speech tags do not
(negation, quantity, kinship, time), with common words of both modern English and the King James Bible (the two
halves of the default sentences).
"""

from __future__ import annotations

#: list name -> its words (lower case)
WORD_LISTS: dict[str, frozenset[str]] = {
    "negation": frozenset("not no never nothing none nobody neither nor n't without cannot nowhere".split()),
    "quantifier": frozenset("all every each some any many few most several both much more less enough".split()),
    "number": frozenset("one two three four five six seven eight nine ten twelve twenty forty hundred thousand "
                        "first second third half".split()),
    "time": frozenset("day days night nights year years today tomorrow yesterday morning evening hour hours time "
                      "week month always ever now then when while before after soon".split()),
    "kin": frozenset("father mother son sons daughter daughters brother brethren brothers sister sisters wife "
                     "husband children child family king queen".split()),
    "divine": frozenset("god lord jesus christ heaven holy spirit angel angels prophet priest priests".split()),
    "body": frozenset("hand hands head eye eyes face heart mouth foot feet blood body arm bones".split()),
    "colour": frozenset("red blue green white black yellow brown grey gray purple gold golden silver".split()),
    "modal": frozenset("can could may might must shall should will would".split()),
    "wh": frozenset("who whom whose what which where why how".split()),
    "archaic": frozenset("thee thou thy thine ye hath doth art shalt wilt unto saith".split()),
}

__all__ = ["WORD_LISTS"]
