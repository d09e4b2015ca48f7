"""Features in superposition: toy models of superposition, and sparse autoencoders trained and evaluated on any
hook of any circuitlab model.

- :mod:`~circuitlab.features.toy`: Elhage et al.'s toy models (the ReLU output model and its linear baseline),
  feature norms, superposition, dimensionality, the two-feature phase diagram and the sparsity sweep
  (``docs/superposition.md``; import it as ``from circuitlab.features import toy``);
- :mod:`~circuitlab.features.sae`: the architectures (ReLU + L1, TopK, JumpReLU; SAELens's names), SAELens's
  on-disk format (:func:`save_sae`, :func:`load_sae`, by shipped name or folder), :func:`splice`;
- :mod:`~circuitlab.features.training`: :func:`train_sae` (several hooks from one forward pass, a shuffled
  buffer, AuxK for dead latents, checkpoints and resume);
- :mod:`~circuitlab.features.evaluation`: :func:`evaluate_sae` (L0, explained variance, MSE, CE loss recovered,
  KL with the SAE spliced in, dead and dense fractions, the density histogram);
- :mod:`~circuitlab.features.dashboard`: :func:`feature_dashboards` (per latent: top-activating contexts, samples
  from activation quantiles, the activation histogram, the logit effect; one pass over a text);
- :mod:`~circuitlab.features.attribution`: :func:`latent_attribution` (attribution patching to latents),
  :func:`latent_ablation` (exact), :func:`steer` (add a multiple of a decoder direction).

Shipped SAEs: ``toy-lm/res-0`` ... ``res-3`` (:func:`shipped_saes`; recipe in :mod:`~circuitlab.features.ship`,
cards beside the weights in ``features/saes/``). The docs page is ``docs/saes.md``.
"""

from circuitlab.features.sae import SAE, SAEConfig, load_sae, save_sae, shipped_saes, splice
from circuitlab.features.training import TrainedSAEs, train_sae
from circuitlab.features.evaluation import SAEEvaluation, evaluate_sae
from circuitlab.features.dashboard import FeatureDashboards, feature_dashboards
from circuitlab.features.attribution import LatentAttribution, Steering, latent_ablation, latent_attribution, steer

__all__ = ["SAE", "SAEConfig", "load_sae", "save_sae", "shipped_saes", "splice", "TrainedSAEs", "train_sae",
           "SAEEvaluation", "evaluate_sae", "FeatureDashboards", "feature_dashboards",
           "LatentAttribution", "Steering", "latent_ablation", "latent_attribution", "steer"]
