"""The engine layer, below every analysis room: the block runner (start at a layer, replace states for many rows,
reuse keys/values under one safety rule, read only the logits a metric needs), the activation collector (hooks to
rows), and the execution layer (the ``Executor`` protocol and its in-process default). Analyses are built on these;
nothing here imports an analysis."""
