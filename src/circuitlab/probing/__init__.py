"""Probing: what linguistic knowledge a model's representations hold (issue 18).

- :mod:`~circuitlab.probing.data`: labelled sentences (CoNLL-U, spaCy, templates, default data);
- :mod:`~circuitlab.probing.align`: words to subword tokens;
- :mod:`~circuitlab.probing.activations`: word representations for many hooks, one forward pass per batch, cached;
- :mod:`~circuitlab.probing.classifier`: linear and MLP probes, control tasks, selectivity, layer sweeps.
"""
