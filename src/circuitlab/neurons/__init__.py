"""Neuron analysis: which individual neurons matter for a property, and what each one encodes.

Submodules: :mod:`~circuitlab.neurons.ranking` (probe-weight, per-neuron statistic and cross-model correlation
rankings), :mod:`~circuitlab.neurons.ablation` (ablation curves), :mod:`~circuitlab.neurons.examples`
(max-activating examples), :mod:`~circuitlab.neurons.explain` (explain, simulate, score),
:mod:`~circuitlab.neurons.compositional` (logical formulas over word concepts, Mu & Andreas 2020),
:mod:`~circuitlab.neurons.features` (SAE latents explained, simulated and scored as units), and
:mod:`~circuitlab.neurons.llm` (the client for a language model behind an OpenAI-compatible endpoint).
"""

from circuitlab.neurons.ablation import ablation_curves, loss_curves
from circuitlab.neurons.compositional import CompositionalExplanations, compositional_explanations
from circuitlab.neurons.examples import NeuronPage, activations, neuron_page
from circuitlab.neurons.explain import (Excerpt, ExplanationScores, Explainer, LLMExplainer, LLMSimulator, NeuronRecord,
                                        NgramExplainer, NgramSimulator, SimulationError, Simulator, corpus_lines,
                                        correlation_score, neuron_records, score_explanations, score_simulation)
from circuitlab.neurons.features import FeatureExplanationScores, explain_features, feature_records
from circuitlab.neurons.llm import LLMClient, LLMError
from circuitlab.neurons.ranking import correlation_ranking, elastic_net_probe, max_correlation, rank_neurons

__all__ = ["CompositionalExplanations", "Excerpt", "ExplanationScores", "Explainer", "LLMClient", "LLMError",
           "LLMExplainer", "LLMSimulator", "NeuronPage", "NeuronRecord", "NgramExplainer", "NgramSimulator",
           "SimulationError", "Simulator", "ablation_curves", "activations", "compositional_explanations",
           "corpus_lines", "correlation_ranking", "correlation_score", "elastic_net_probe", "loss_curves",
           "max_correlation", "neuron_page", "neuron_records", "rank_neurons", "score_explanations",
           "score_simulation", "FeatureExplanationScores", "explain_features", "feature_records"]
