"""Models behind one API; importing this package registers the built-in ones.

A fitted model is saved with :func:`save_model` (a bundle folder: safetensors weights and a JSON
manifest) and read back with :func:`load_model`.
"""

from flawscope.models import box_detector, padim, patchcore, tasks  # noqa: F401
from flawscope.models.io import load_model, save_model
from flawscope.models.registry import MODELS, get_model_class, register

__all__ = ["MODELS", "get_model_class", "load_model", "register", "save_model"]
