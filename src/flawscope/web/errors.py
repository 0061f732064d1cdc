"""Errors of the web app that its pages and API turn into clear HTTP answers."""

from __future__ import annotations

from flawscope.errors import FlawscopeError, InputError


class DatabaseError(FlawscopeError):
    """The audit database could not be read or written (the message says why, without SQL)."""


class NotFoundError(InputError):
    """What a request names does not exist (answered 404)."""


class PartNotFoundError(NotFoundError):
    """The inspection a review or a flag names is not in the audit log."""


class ConflictError(InputError):
    """A request that clashes with what exists (a user name taken; answered 409)."""
