"""The one exception family of circuitlab.

Every error the package raises on purpose is a :class:`CircuitlabError`. Its message says what was wrong
and how to fix it, so a notebook user can act on it without reading our source.
"""

from __future__ import annotations


class CircuitlabError(Exception):
    """Base class for every error circuitlab raises on purpose."""


class ModelNotFoundError(CircuitlabError):
    """A model name or path that names nothing we can load."""


class ModelDownloadError(CircuitlabError):
    """A pretrained model needed a download that could not happen (no network, hub unreachable)."""


class InputError(CircuitlabError, ValueError):
    """Bad arguments: shapes that do not fit, an index out of range, an unknown option."""


class NonFiniteError(CircuitlabError):
    """A model's weights or activations hold NaN or infinite values, so an analysis has no number to report."""


class NotApplicable(CircuitlabError):
    """Raised when a task or a finding does not apply to the model (say why): a text task on a model without a
    tokenizer, an MLP finding on an attention-only model. A reproduction's verdict is then ``"not applicable"``."""
