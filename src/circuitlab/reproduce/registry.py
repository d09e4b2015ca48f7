"""The registry of published findings and the run that checks one: published vs measured, side by side.

A :class:`Finding` is a published mechanistic claim made executable. It holds:

- **the source**: a :class:`Citation` (authors, year, title, where in the paper);
- **the claim** in one sentence, and **the published figure(s)** quoted as the paper gives them, with the model
  they were measured on (never recomputed: ``published`` is text, and the verdict does not read it);
- **the models** circuitlab measures it on here (the first is the default), and a runtime estimate;
- **the measurement**: ``measure(model, seed) -> Measurement``, written with circuitlab's own analyses;
- **the verdict rule**, in words, fixed in advance (``rule``); ``measure`` applies exactly that rule and says
  how (``Measurement.why``).

A finding that does not reproduce on a model is a result: the verdict says so (``"not reproduced"``, or
``"partly"``), and the run still succeeds. A model the finding cannot apply to (an attention-only model for an
MLP finding) gives ``"not applicable"`` by raising :class:`NotApplicable`.

Adding a finding is one new file in ``circuitlab/reproduce/`` that calls :func:`register` at import; the
registry imports every module of the package on first use (:func:`findings`).
"""

from __future__ import annotations

import importlib
import pkgutil
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from circuitlab.errors import CircuitlabError, InputError, NotApplicable

#: the verdicts a run can give, strongest first
VERDICTS = ("reproduced", "partly", "not reproduced", "not applicable")


def verdict(reproduced: bool, partly: bool) -> str:
    """The verdict of a rule with two levels: ``"reproduced"`` where the whole claim holds (``reproduced``),
    ``"partly"`` where only part of it does (``partly``), ``"not reproduced"`` otherwise.

    Every finding's ``measure`` ends with it, e.g. ``verdict(a and b, a or b)`` for a claim of two parts that
    both must hold, or ``verdict(ratio >= 10, ratio >= 3)`` for one number read against two thresholds.
    ``reproduced`` wins whatever ``partly`` says. (``"not applicable"`` is not a verdict of the rule: the
    measurement raises :class:`NotApplicable` instead.)
    """
    return "reproduced" if reproduced else "partly" if partly else "not reproduced"


@dataclass(frozen=True)
class Citation:
    """Where a finding was published: ``where`` points into the paper (a section, figure or table)."""

    authors: str
    year: int
    title: str
    where: str = ""
    url: str = ""

    def short(self) -> str:
        """``"Olsson et al. 2022"``."""
        return f"{self.authors} {self.year}"

    def __str__(self) -> str:
        where = f", {self.where}" if self.where else ""
        return f"{self.authors} ({self.year}). {self.title}{where}."


@dataclass
class Measurement:
    """What one run measured: the figures in one line, the verdict under the finding's rule, and why.

    ``values`` holds the numbers behind ``figures`` (for tests and JSON); ``evidence`` the results that support
    them (heatmaps, top tokens), shown in the report.
    """

    figures: str
    verdict: str
    why: str
    values: dict[str, Any] = field(default_factory=dict)
    evidence: list = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict {self.verdict!r} is not one of {VERDICTS}")


@dataclass(frozen=True)
class Finding:
    """One published finding as an executable check (see the module docstring)."""

    id: str
    citation: Citation
    claim: str
    published: str
    published_model: str
    models: tuple[str, ...]
    measure: Callable[[Any, int], Measurement]
    rule: str
    seconds: float
    seed: int = 0
    also: tuple[Citation, ...] = ()
    uses_seed: bool = True  # False where the measurement draws nothing at random (fixed prompts, weights)
    loads_model: bool = True  # False where the measurement trains its own models (toy models): measure(None, seed)

    def papers(self) -> str:
        """The citations, short form: ``"Olsson et al. 2022; Elhage et al. 2021"``."""
        return "; ".join(c.short() for c in (self.citation, *self.also))


@dataclass
class Reproduction:
    """One finding run on one model: the row of ``circuitlab reproduce`` and a section of its report."""

    finding: Finding
    model: str
    measurement: Measurement
    seconds: float
    seed: int

    @property
    def verdict(self) -> str:
        return self.measurement.verdict

    @property
    def same_model(self) -> bool:
        """Whether circuitlab measured on the model the paper used (usually not: offline models differ)."""
        return self.model.lower() == self.finding.published_model.lower()

    def row(self) -> dict[str, Any]:
        """The table row: finding, published figure and model, measured figure and model, verdict, seconds."""
        f = self.finding
        return {"finding": f.id, "paper": f.papers(), "published": f.published, "published_model": f.published_model,
                "measured": self.measurement.figures, "model": self.model + ("" if self.same_model else " (differs)"),
                "verdict": self.verdict, "seconds": round(self.seconds, 1), "seed": self.seed_text}

    @property
    def seed_text(self) -> str:
        """The seed as printed: the number, or ``"none"`` where the finding draws nothing at random."""
        return str(self.seed) if self.finding.uses_seed else "none"


# ---------------------------------------------------------------------------------------------------------------
# The registry
# ---------------------------------------------------------------------------------------------------------------

_FINDINGS: dict[str, Finding] = {}
_LOADED = False


def register(finding: Finding) -> Finding:
    """Add ``finding`` to the registry (each finding's module calls this at import)."""
    if finding.id in _FINDINGS and _FINDINGS[finding.id] is not finding:
        raise CircuitlabError(f"two findings are registered as {finding.id!r}; give each a distinct id.")
    if not finding.models:
        raise CircuitlabError(f"finding {finding.id!r} names no model to measure on.")
    _FINDINGS[finding.id] = finding
    return finding


def findings() -> dict[str, Finding]:
    """Every registered finding by id, in registration order (modules imported in name order)."""
    global _LOADED
    if not _LOADED:
        import circuitlab.reproduce as pkg

        for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
            if info.name != "registry":
                importlib.import_module(f"circuitlab.reproduce.{info.name}")
        _LOADED = True
    return dict(_FINDINGS)


def get_finding(finding_id: str) -> Finding:
    """The finding registered as ``finding_id``; an unknown id is an error naming the closest known ids (all of
    them when there are few) and ``circuitlab reproduce --list``."""
    known = findings()
    if finding_id not in known:
        import difflib

        from circuitlab.core import shorten

        close = difflib.get_close_matches(str(finding_id), list(known), n=3, cutoff=0.4)
        listed = (f"Known findings: {', '.join(known)}" if len(known) <= 8 else
                  f"Closest: {', '.join(close)}" if close else f"{len(known)} findings are registered")
        raise InputError(f"no finding {shorten(finding_id)}. {listed} (circuitlab reproduce --list describes them).")
    return known[finding_id]


def run(finding: Finding | str, model: Optional[str] = None, seed: Optional[int] = None) -> Reproduction:
    """Measure ``finding`` on ``model`` (a name, or a loaded model; default: the finding's first model) with
    ``seed`` (default: its own) and apply its verdict rule. A model the finding does not apply to gives the
    verdict ``"not applicable"``; the time includes loading the model."""
    from circuitlab.core import check_seed, model_name, shorten
    from circuitlab.models.loading import as_any_model  # as_model, and encoders (minilm-l6) by name

    if not isinstance(finding, (str, Finding)):
        raise InputError(f"finding must be a finding id (circuitlab reproduce --list shows them) or a Finding; got "
                         f"{shorten(finding)}.")
    seed = None if seed is None else check_seed(seed)
    finding = get_finding(finding) if isinstance(finding, str) else finding
    seed = finding.seed if seed is None else seed
    started = time.perf_counter()
    if not finding.loads_model:  # the finding trains the models it measures (toy models): nothing to load
        name = finding.models[0]
        if model is not None:
            measurement = Measurement(figures="-", verdict="not applicable",
                                      why=f"{finding.id} trains its own models ({name}); it takes no model")
            return Reproduction(finding, shorten(model, 60) if not isinstance(model, str) else model, measurement,
                                time.perf_counter() - started, seed)
        loaded = None
    else:
        loaded = as_any_model(model if model is not None else finding.models[0])
        name = model if isinstance(model, str) else finding.models[0] if model is None else \
            model_name(loaded) or "model"
    try:
        measurement = finding.measure(loaded, seed)
    except NotApplicable as exc:
        measurement = Measurement(figures="-", verdict="not applicable", why=str(exc))
    return Reproduction(finding, name, measurement, time.perf_counter() - started, seed)


def _run_findings(_model, findings: list, seed: Optional[int], progress: bool = False) -> list[tuple]:
    """One shard of :func:`run_many`: each finding run on its default model (loaded here: a finding's model is
    its own), ``(model, measurement, seconds, seed)`` for each."""
    from circuitlab.core import progress_bar

    out = []
    for f in progress_bar(findings, progress=progress and len(findings) > 1, desc="findings", unit="finding"):
        r = run(f, seed=seed)
        out.append((r.model, r.measurement, r.seconds, r.seed))
    return out


def run_many(chosen: list, seed: Optional[int] = None, executor: Any = None, *,
             progress: bool = False) -> list[Reproduction]:
    """:func:`run` for every finding of ``chosen`` (ids or Findings) on its default model, in the order given. The
    findings are the shards: here one after another (``executor=None``), or with ``executor`` (``"ray"`` or an
    executor of :mod:`circuitlab.engine.executor` / :mod:`circuitlab.distributed`) shared out among the workers,
    finding ``i`` to worker ``i % workers``. ``progress``: a bar over the findings run in this process."""
    from circuitlab.core import check_seed

    seed = None if seed is None else check_seed(seed)
    from circuitlab.engine.executor import as_executor, run_shards, shard_count, split

    chosen = [get_finding(f) if isinstance(f, str) else f for f in chosen]
    if not chosen:
        return []
    ex, owned = as_executor(executor)
    try:
        blocks = split(range(len(chosen)), shard_count(ex, len(chosen)), interleave=True)
        shards = [dict(findings=[chosen[i] for i in block], seed=seed, progress=progress and executor is None)
                  for block in blocks]
        parts, _ = run_shards(ex, None, _run_findings, shards)
    finally:
        if owned:
            ex.close()
    done = {i: part for block, shard in zip(blocks, parts) for i, part in zip(block, shard)}
    return [Reproduction(f, *done[i]) for i, f in enumerate(chosen)]
