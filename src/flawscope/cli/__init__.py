"""The ``flawscope`` command line (see :mod:`flawscope.cli.app`)."""

from flawscope.cli.app import app, main

__all__ = ["app", "main"]
