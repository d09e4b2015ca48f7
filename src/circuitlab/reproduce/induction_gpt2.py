"""Induction heads in GPT-2 small: circuitlab's induction-circuit finder against the published heads.

Published (TransformerLens demos, ARENA): induction heads 5.1, 5.5, 6.9, 7.2, 7.10; previous-token head 4.11 (and
2.2, weaker). :func:`check_gpt2_reference` runs :func:`circuitlab.induction.find_induction_circuit` on GPT-2 small and
returns a :class:`ReferenceCheck` (passed, missing and extra heads), which renders to HTML. GPT-2 small needs a
download, so this check is a function to call, not a finding in the offline registry (``circuitlab reproduce``).

    from circuitlab.reproduce.induction_gpt2 import check_gpt2_reference

    print(check_gpt2_reference(seed=0))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from circuitlab.core import Head, ModelLike, as_model
from circuitlab.errors import CircuitlabError
from circuitlab.induction import InductionCircuit, find_induction_circuit
from circuitlab.results import Bundle

#: published induction heads of GPT-2 small (TransformerLens demos, ARENA), as ``(layer, head)``
GPT2_INDUCTION_HEADS = ((5, 1), (5, 5), (6, 9), (7, 2), (7, 10))
#: published previous-token heads of GPT-2 small: 4.11 strong, 2.2 weaker
GPT2_PREVIOUS_TOKEN_HEADS = ((4, 11), (2, 2))


@dataclass(repr=False)
class ReferenceCheck(Bundle):
    """Our findings on GPT-2 small against the published heads."""

    circuit: InductionCircuit
    missing_induction: list[Head]
    extra_induction: list[Head]
    previous_token_found: dict[Head, bool]

    @property
    def passed(self) -> bool:
        """All published induction heads found, and the strong previous-token head 4.11 found."""
        return not self.missing_induction and self.previous_token_found[GPT2_PREVIOUS_TOKEN_HEADS[0]]

    def summary(self) -> str:
        ind, prev = self.circuit.induction_scores.values, self.circuit.previous_token_scores.values
        fmt = lambda hs, v: ", ".join(f"{l}.{h} ({float(v[l, h]):.2f})" for l, h in hs)  # noqa: E731
        lines = [f"GPT-2 small reference check: {'PASSED' if self.passed else 'FAILED'}",
                 f"  published induction heads: {fmt(GPT2_INDUCTION_HEADS, ind)}",
                 f"  missing: {fmt(self.missing_induction, ind) or 'none'}; "
                 f"also found: {fmt(self.extra_induction, ind) or 'none'}",
                 f"  published previous-token heads: {fmt(GPT2_PREVIOUS_TOKEN_HEADS, prev)}; found as such: "
                 + ", ".join(f"{l}.{h} {'yes' if ok else 'no'}" for (l, h), ok in self.previous_token_found.items())]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


def check_gpt2_reference(model: ModelLike | None = None, **kwargs: Any) -> ReferenceCheck:
    """Run :func:`find_induction_circuit` on GPT-2 small and compare with the published heads.

    Published (TransformerLens demos, ARENA): induction heads 5.1, 5.5, 6.9, 7.2, 7.10; previous-token head
    4.11 (and 2.2, weaker). The check passes when every published induction head is found and 4.11 is found
    as a previous-token head; the weaker 2.2 and any further heads are reported, not required.

    Needs the ``gpt2-small`` weights: without network this raises
    :class:`~circuitlab.errors.ModelDownloadError` within seconds.
    """
    model = as_model(model if model is not None else "gpt2-small")
    if (model.cfg.n_layers, model.cfg.n_heads, model.cfg.d_model) != (12, 12, 768):
        raise CircuitlabError(f"check_gpt2_reference needs GPT-2 small (12 layers x 12 heads, d_model 768); got "
                              f"{model.cfg.n_layers} x {model.cfg.n_heads}, d_model {model.cfg.d_model}.")
    circuit = find_induction_circuit(model, **kwargs)
    found = set(circuit.induction_heads)
    return ReferenceCheck(
        circuit=circuit,
        missing_induction=[h for h in GPT2_INDUCTION_HEADS if h not in found],
        extra_induction=[h for h in circuit.induction_heads if h not in GPT2_INDUCTION_HEADS],
        previous_token_found={h: h in circuit.previous_token_heads for h in GPT2_PREVIOUS_TOKEN_HEADS},
    )


__all__ = ["GPT2_INDUCTION_HEADS", "GPT2_PREVIOUS_TOKEN_HEADS", "ReferenceCheck", "check_gpt2_reference"]
