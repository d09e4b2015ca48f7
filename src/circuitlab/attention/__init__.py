"""Attention as explanation (issue 34): what attention weights say about which input tokens matter, and which heads
a model needs.

- :mod:`circuitlab.attention.flow`: attention rollout and attention flow (Abnar & Zuidema 2020) from an output
  position to the input tokens, raw attention as the baseline, token importance by input ablation, and their Spearman
  correlations;
- :mod:`circuitlab.attention.importance`: head importance as the expected absolute gradient of the loss (or a metric)
  with respect to a head mask (Michel et al. 2019), and pruning curves by importance, greedily, at random or in a
  given order (heads masked by hooks; the weights never change).
"""

from circuitlab.attention.importance import head_importance, masked_loss, prune_curve
from circuitlab.attention.flow import (ablation_importance, attention_flow, attention_maps, correlations,
                                          mixed_attention, raw_attention, rollout, rollout_matrix)

__all__ = ["ablation_importance", "attention_flow", "attention_maps", "correlations", "head_importance",
           "masked_loss", "mixed_attention", "prune_curve", "raw_attention", "rollout", "rollout_matrix"]
