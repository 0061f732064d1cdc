"""Errors that name the file or field and the problem, for users rather than developers."""

from __future__ import annotations


class FlawscopeError(Exception):
    """Base class for every error flawscope raises on purpose."""


class InputError(FlawscopeError):
    """A user's input (file, folder, field) is not usable.

    Args:
        where: the file path or field name at fault.
        problem: a short sentence saying what is wrong with it.
    """

    def __init__(self, where: object, problem: str) -> None:
        self.where = str(where)
        self.problem = problem
        super().__init__(f"{self.where}: {problem}")


class BundleError(FlawscopeError):
    """A model bundle is missing, altered or does not match its manifest."""


class OfflineError(FlawscopeError):
    """Weights or data that would need the internet are not available locally."""
