"""Model editing (issue 35): ROME and MEMIT, closing the loop from causal tracing to the weights."""

from circuitlab.editing.covariance import KeyCovariance, default_corpus, key_covariance
from circuitlab.editing.edit import Edit, Request, combine
from circuitlab.editing.rome import default_layer, rome, rome_update

__all__ = ["Edit", "KeyCovariance", "Request", "combine", "default_corpus", "default_layer", "key_covariance", "rome",
           "rome_update"]
