"""Circuits read from the weights (Elhage et al. 2021, "A Mathematical Framework for Transformer Circuits").

- :mod:`circuitlab.weights.circuits`: each head's OV circuit ``W_E W_V W_O W_U`` and QK circuit
  ``W_E W_Q W_K^T W_E^T`` (token and positional parts, and the K-composed keys of induction heads), their top entries
  streamed over the vocabulary, the direct-path bigram table ``W_E W_U``, and copying scores from the circuits'
  eigenvalues (float64, through the ``d_head x d_head`` form);
- :mod:`circuitlab.weights.paths`: skip-trigrams of a head ((source, destination, output) ranked by QK x OV) and the
  path expansion of a one-layer attention-only model with its attention patterns frozen on a prompt (direct path +
  one term per head = the logits), with the share of the logits the top skip-trigrams explain.

The room is named for what it reads (the weights), not for a method: every number here is a product of weight
matrices, apart from the frozen patterns and norm scales of the path expansion.
"""

from circuitlab.weights.circuits import (CopyingScores, bigram_table, circuit_matrix, copying_scores, ov_circuit,
                                         qk_circuit)

__all__ = ["CopyingScores", "bigram_table", "circuit_matrix", "copying_scores", "ov_circuit", "qk_circuit"]
from circuitlab.weights.paths import PathExpansion, SkipTrigrams, path_expansion, skip_trigrams  # noqa: E402

__all__ += ["PathExpansion", "SkipTrigrams", "path_expansion", "skip_trigrams"]
