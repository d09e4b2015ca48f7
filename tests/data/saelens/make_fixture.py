"""How the SAELens-written fixture beside this file was made (run once, with sae-lens 6.54.12 installed):

    python tests/data/saelens/make_fixture.py

For each architecture SAELens's own class gets seeded random weights (``threshold`` positive, some latents firing
and some not), is written with ``SAE.save_model``, and its ``encode`` / ``forward`` of 5 seeded inputs are stored in
``expected.safetensors`` (``{arch}.x``, ``{arch}.latents``, ``{arch}.recon``). tests/test_features_sae.py loads the
folders with circuitlab and compares, so the SAELens -> circuitlab direction is tested without sae-lens installed.
"""

from pathlib import Path

import torch
from safetensors.torch import save_file
from sae_lens import JumpReLUSAE, JumpReLUSAEConfig, StandardSAE, StandardSAEConfig, TopKSAE, TopKSAEConfig

HERE = Path(__file__).parent
g = torch.Generator().manual_seed(0)
expected = {}
for cls, cfg in [(StandardSAE, StandardSAEConfig(d_in=8, d_sae=16)), (TopKSAE, TopKSAEConfig(d_in=8, d_sae=16, k=3)),
                 (JumpReLUSAE, JumpReLUSAEConfig(d_in=8, d_sae=16))]:
    cfg.metadata.hook_name = "blocks.1.hook_resid_post"
    cfg.metadata.model_name = "fixture"
    sae = cls(cfg)
    with torch.no_grad():
        for name, p in sae.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.5 if name != "threshold" else 0.3))
            if name == "threshold":
                p.abs_()
    arch = cfg.architecture()
    sae.save_model(HERE / arch)
    x = torch.randn(5, 8, generator=g) * 2
    with torch.no_grad():
        expected[f"{arch}.x"] = x
        expected[f"{arch}.latents"] = sae.encode(x)
        expected[f"{arch}.recon"] = sae(x)
save_file(expected, str(HERE / "expected.safetensors"))
