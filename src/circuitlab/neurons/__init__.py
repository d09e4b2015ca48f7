"""Neuron analysis: which individual neurons matter for a property, and what each one encodes.

Submodules: :mod:`~circuitlab.neurons.ranking` (probe-weight, per-neuron statistic and cross-model correlation
rankings), :mod:`~circuitlab.neurons.ablation` (ablation curves), :mod:`~circuitlab.neurons.examples`
(max-activating examples), :mod:`~circuitlab.neurons.explain` (explain, simulate, score).
"""
