"""The explicit model registry: a dict and a decorator that refuses duplicates."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from flawscope.models.base import Model

MODELS: dict[str, type[Model]] = {}
T = TypeVar("T", bound="type[Model]")


def register(name: str) -> Callable[[T], T]:
    """Class decorator adding a model under ``name``.

    Raises:
        ValueError: when the name is already registered.
    """

    def add(cls: T) -> T:
        if name in MODELS:
            raise ValueError(f"model {name!r} is already registered by {MODELS[name].__qualname__}")
        cls.name = name
        MODELS[name] = cls
        return cls

    return add


def get_model_class(name: str) -> type[Model]:
    """Look up a registered model class by name.

    Raises:
        InputError: naming the known models.
    """
    import flawscope.models  # noqa: F401  (registers the built-in models)
    from flawscope.errors import InputError

    if name not in MODELS:
        raise InputError("model", f"unknown model {name!r}; registered: {', '.join(sorted(MODELS))}")
    return MODELS[name]
