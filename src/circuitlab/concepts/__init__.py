"""Concept-based explanations and gradient attributions for TransformerLens models.

- :mod:`circuitlab.concepts.gradients`: integrated gradients over tokens (at the embeddings or any hook),
  gradient x input, with the completeness check;
- :mod:`circuitlab.concepts.tcav`: testing with concept activation vectors (TCAV) for text, with significance
  tests against random concepts.
"""
