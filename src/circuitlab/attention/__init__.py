"""Attention as explanation (issue 34): what attention weights say about which input tokens matter, and which heads
a model needs.

- :mod:`circuitlab.attention.patterns`: Kovaleva et al.'s taxonomy of attention maps (vertical, diagonal,
  vertical+diagonal, block, heterogeneous): a classifier trained on synthetic maps of known class, and the share of
  each class per head and layer of a model on random-token or text inputs;
- :mod:`circuitlab.attention.flow`: attention rollout and attention flow (Abnar & Zuidema 2020) from an output
  position to the input tokens, raw attention as the baseline, token importance by input ablation, and their Spearman
  correlations;
- :mod:`circuitlab.attention.importance`: head importance as the expected absolute gradient of the loss (or a metric)
  with respect to a head mask (Michel et al. 2019), and pruning curves by importance, greedily, at random, by pattern
  class or in a given order (heads masked by hooks; the weights never change).
"""

from circuitlab.attention.patterns import pattern_taxonomy, taxonomy_accuracy
from circuitlab.attention.importance import head_importance, masked_loss, prune_curve
from circuitlab.attention.flow import (ablation_importance, attention_flow, attention_maps, correlations,
                                          gradient_importance,
                                          mixed_attention, raw_attention, rollout, rollout_matrix)

__all__ = ["ablation_importance", "attention_flow", "attention_maps", "correlations", "gradient_importance",
           "head_importance",
           "masked_loss", "mixed_attention", "pattern_taxonomy", "prune_curve", "raw_attention", "rollout",
           "rollout_matrix", "taxonomy_accuracy"]
