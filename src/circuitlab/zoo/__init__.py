"""The model zoo: small models circuitlab trains itself, with the recipes that train them.

The trained weights ship in ``circuitlab/zoo/weights/<name>/`` and load offline with
``circuitlab.load_model("zoo/<name>")``. Rebuild them with ``python -m circuitlab.zoo build NAME``.

- ``registry``: the recipes by zoo name (``ZooRecipe``; each recipe module registers its own);
- ``attn_only``, ``toy_lm``: one file per recipe; ``attn_only_text``: natural-text attention-only models with
  checkpoints (``python -m circuitlab.zoo dynamics``; not built into the zoo);
- ``training``: the one training loop; ``fastgpt``: the fast training twin of a GPT-style ``HookedTransformer``;
- ``tokenizer``, ``text_data``: the recipes' tokenizers and the Debian-packaged text ``toy_lm`` trains on;
- ``build``: ``python -m circuitlab.zoo build|measure``.
"""
