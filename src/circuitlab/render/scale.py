"""Colour scales, and the one rule that picks a result's scale.

Two scales, and every heatmap, token chip and legend uses one of them:

- **diverging**: white at zero, blue for positive, red for negative, symmetric (``-vmax .. +vmax``). For signed
  quantities, where the sign is the finding: logit differences, logits, attributions, patching effects and
  the fraction of a difference recovered, changes and deltas.
- **sequential**: white at zero to blue at ``vmax`` (``0 .. vmax``), no red. For quantities that cannot be
  negative: head scores (induction, previous-token, duplicate-token, composition), attention, losses,
  probabilities, norms, ranks.

The rule (:func:`scale_kind`), in order:

1. any finite value below zero -> **diverging** (a sequential scale cannot show it);
2. ``meta["scale"]`` set to ``"sequential"`` or ``"diverging"`` on the result -> that (an analysis that knows
   better says so here);
3. the result's metric, then its title: the first that names a signed quantity (:data:`SIGNED_WORDS`: "logit",
   "attribution", "patching", "effect", "recovered", "difference", " - ", ...) or a non-negative one
   (:data:`NONNEGATIVE_WORDS`: "score", "loss", "probability", "attention", "norm", "rank", ...) decides: signed
   -> **diverging**, even where every value happens to be positive (a patching effect that is positive
   everywhere is still a sign); non-negative -> **sequential**. Signed wins when one name has both;
4. otherwise (every value >= 0, and nothing says it is signed) -> **sequential**.

So a new analysis gets the right scale without code of its own: non-negative data is sequential unless its name
says it is signed. Cell text is black or white, whichever contrasts more with the cell's colour
(:func:`text_colour`).
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from typing import Any, Iterable

import torch
from torch import Tensor

from circuitlab.core import shorten

DIVERGING = "diverging"
SEQUENTIAL = "sequential"

#: words in a result's title or metric that mark a signed quantity (matched lower-case)
SIGNED_WORDS = ("logit", "attribution", "patching", "patched", "effect", "recovered", "difference", "diff",
                "change", "delta", "gradient", "direction", " - ", "\u2212")
#: words that mark a quantity that cannot be negative
NONNEGATIVE_WORDS = ("score", "loss", "probabilit", "prob", "entropy", "nll", "attention", "norm", "rank",
                     "count", "frequency", "accuracy", "distance")

_POS = (37, 99, 235)   # blue
_NEG = (220, 38, 38)   # red
_SEQ = (29, 78, 216)   # the sequential scale's top: a deeper blue
_NAN = "#d4d4d4"
#: text colours for light and dark cells
DARK_TEXT, LIGHT_TEXT = "#000000", "#ffffff"  # pure black: with it, one of the two always reaches
# a contrast of 4.5 (WCAG AA), whatever the cell colour


def _mix(end: tuple[int, int, int], a: float) -> str:
    r, g, b = (round(255 + (c - 255) * a) for c in end)
    return f"#{r:02x}{g:02x}{b:02x}"


def colour(v: float, vmax: float) -> str:
    """The diverging colour of ``v`` on a scale whose extremes are ``±vmax``: white at zero, blue up, red down."""
    if v != v:  # NaN
        return _NAN
    if vmax <= 0 or not math.isfinite(vmax):
        return "#ffffff"
    t = max(-1.0, min(1.0, v / vmax))
    return _mix(_POS if t >= 0 else _NEG, abs(t))


def sequential_colour(v: float, vmax: float) -> str:
    """The sequential colour of ``v`` on ``0 .. vmax``: white at zero (and below), deep blue at ``vmax``."""
    if v != v:
        return _NAN
    if vmax <= 0 or not math.isfinite(vmax):
        return "#ffffff"
    return _mix(_SEQ, max(0.0, min(1.0, v / vmax)))


def _luminance(hex_colour: str) -> float:
    """Relative luminance (WCAG 2) of ``#rrggbb``."""
    def channel(c: int) -> float:
        s = c / 255
        return s / 12.92 if s <= 0.04045 else ((s + 0.055) / 1.055) ** 2.4

    r, g, b = (int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))
    return 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b)


def text_colour(background: str) -> str:
    """Black or white text, whichever has the higher contrast with ``background`` (``#rrggbb``)."""
    lum = _luminance(background)
    on_dark = (_luminance(LIGHT_TEXT) + 0.05) / (lum + 0.05)
    on_light = (lum + 0.05) / (_luminance(DARK_TEXT) + 0.05)
    return LIGHT_TEXT if on_dark > on_light else DARK_TEXT


def _finite(values: Any) -> Tensor:
    vals = torch.as_tensor(values).detach().float().flatten().cpu()
    return vals[torch.isfinite(vals)]


def scale_kind(values: Any, *names: str, meta: dict | None = None) -> str:
    """``"diverging"`` or ``"sequential"`` for ``values`` described by ``names`` (metric first, then title): the rule
    above."""
    finite = _finite(values)
    if finite.numel() and float(finite.min()) < 0:
        return DIVERGING
    asked = (meta or {}).get("scale") if isinstance(meta, dict) else None
    if asked in (DIVERGING, SEQUENTIAL):
        return asked
    for name in names:
        text = (name or "").lower()
        if any(w in text for w in SIGNED_WORDS):
            return DIVERGING
        if any(w in text for w in NONNEGATIVE_WORDS):
            return SEQUENTIAL
    return SEQUENTIAL


def scale_of(result: Any) -> str:
    """The scale kind of a :class:`~circuitlab.results.Result` (its values, title, metric and ``meta``)."""
    return scale_kind(result.values, result.metric, result.title, meta=result.meta)


@dataclass(frozen=True)
class Scale:
    """A colour scale: its kind and the value that gets full colour (``vmax``)."""

    kind: str
    vmax: float

    @classmethod
    def for_values(cls, values: Any, kind: str | None = None, *names: str, vmax: float | None = None,
                   meta: dict | None = None) -> "Scale":
        """The scale for ``values``: ``kind`` if given, else by :func:`scale_kind`; ``vmax`` defaults to the largest
        absolute finite value."""
        if kind is None:
            kind = scale_kind(values, *names, meta=meta)
        if kind not in (DIVERGING, SEQUENTIAL):
            raise ValueError(f"unknown colour scale {shorten(kind)}; use {shorten(DIVERGING)} or "
                             f"{shorten(SEQUENTIAL)}.")
        if vmax is None:
            finite = _finite(values)
            vmax = float(finite.abs().max()) if finite.numel() else 0.0
        return cls(kind, float(vmax))

    @property
    def lo(self) -> float:
        return -self.vmax if self.kind == DIVERGING else 0.0

    def colour(self, v: float) -> str:
        return colour(v, self.vmax) if self.kind == DIVERGING else sequential_colour(v, self.vmax)

    def text(self, v: float) -> str:
        """The text colour for a cell of value ``v``."""
        return text_colour(self.colour(v)) if v == v else DARK_TEXT

    def legend(self, fmt: str = "{:.3g}") -> str:
        """A colour bar from ``lo`` to ``vmax`` with its end values (and white's value, on a diverging scale)."""
        stops = ([self.colour(-self.vmax), "#ffffff", self.colour(self.vmax)] if self.kind == DIVERGING
                 else ["#ffffff", self.colour(self.vmax)])
        bar = f"linear-gradient(to right, {', '.join(stops)})"
        return (f"<div class='cl-legend' data-scale='{self.kind}'><span>{html.escape(fmt.format(self.lo))}</span>"
                f"<span class='cl-legend-bar' style='background:{bar}'></span>"
                f"<span>{html.escape(fmt.format(self.vmax))}</span></div>")


def shared_scale(groups: Iterable[Any], *names: str, meta: dict | None = None) -> Scale:
    """One scale for several tensors shown side by side (small multiples, chip rows)."""
    flat = [torch.as_tensor(g).detach().float().flatten().cpu() for g in groups]
    return Scale.for_values(torch.cat(flat) if flat else torch.zeros(0), None, *names, meta=meta)
