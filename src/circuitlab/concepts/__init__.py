"""Concept-based explanations and gradient attributions for TransformerLens models.

- :mod:`circuitlab.concepts.gradients`: integrated gradients over tokens (at the embeddings or any hook),
  gradient x input, with the completeness check;
- :mod:`circuitlab.concepts.tcav`: testing with concept activation vectors (TCAV) for text, with significance
  tests against random concepts (the t-test in :mod:`circuitlab.concepts.stats`, without SciPy);
- :mod:`circuitlab.concepts.sentiment`: an offline sentiment task written from templates, a label-word classifier,
  and the TCAV experiment on it (:func:`~circuitlab.concepts.sentiment.sentiment_tcav`);
- :mod:`circuitlab.concepts.debugging`: a linear-head classifier on a frozen model, trained on reviews with a
  spurious name (shortcut detection with integrated gradients, accuracy in and out of distribution), and
  explanation regularisation against it over seeds;
- :mod:`circuitlab.concepts.rationales`: explanations as rationales (AMPLIFY): a proxy classifier's integrated
  gradients written as rationales into the few-shot prompts of a language model, against no and random rationales.
"""
