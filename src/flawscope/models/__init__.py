"""Anomaly models behind one API; importing this package registers the built-in ones."""

from flawscope.models import padim, patchcore  # noqa: F401
from flawscope.models.registry import MODELS, get_model_class, register

__all__ = ["MODELS", "get_model_class", "register"]
