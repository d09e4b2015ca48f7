"""Published mechanistic findings as executable checks: the published figure and circuitlab's measurement side by
side, with a verdict rule fixed in advance.

    from circuitlab import reproduce

    reproduce.findings()                                  # id -> Finding (citation, claim, published figure, ...)
    r = reproduce.run("induction-heads-need-two-layers")  # measured on the finding's default model
    r.row()                                               # published vs measured, verdict, seconds, seed

From the shell: ``circuitlab reproduce --list``, ``circuitlab reproduce ID [--model NAME] [--out report.html]``,
``circuitlab reproduce --all``. Each finding is one file in this package (see :mod:`.registry`).
"""

from circuitlab.reproduce.registry import (VERDICTS, Citation, Finding, Measurement, NotApplicable, Reproduction,
                                           findings, get_finding, register, run, verdict)

__all__ = ["VERDICTS", "Citation", "Finding", "Measurement", "NotApplicable", "Reproduction", "findings",
           "get_finding", "register", "run", "verdict"]
