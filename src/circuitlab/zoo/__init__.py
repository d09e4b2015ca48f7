"""The model zoo: small models circuitlab trains itself, with the recipes that train them.

The trained weights ship in ``circuitlab/zoo/weights/<name>/`` and load offline with
``circuitlab.load_model("zoo/<name>")``. Rebuild them with ``python -m circuitlab.zoo build NAME``.
"""
