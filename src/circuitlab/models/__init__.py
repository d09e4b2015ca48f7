"""Model loading and saving: zoo names, model directories, pretrained names, live models."""

from circuitlab.models.io import save_model
from circuitlab.models.loading import hub_reachable, list_models, load_model, zoo_card

__all__ = ["hub_reachable", "list_models", "load_model", "save_model", "zoo_card"]
