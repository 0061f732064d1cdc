"""Errors that name the file or field and the problem, for users rather than developers."""

from __future__ import annotations

import errno
import os
from pathlib import Path


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


def on_read_only_file_system(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` (or its nearest existing parent) is on a file system mounted read-only.

    That is the cause to name: "permission denied" or SQLite's "unable to open database file"
    would send a user looking at file permissions instead.
    """
    target = Path(path).absolute()
    while not target.exists() and target != target.parent:
        target = target.parent
    try:
        return bool(os.statvfs(target).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def os_problem(exc: OSError, path: str | os.PathLike[str] | None = None) -> str:
    """A short account of a failed file operation, naming a read-only file system as such.

    Args:
        exc: the error.
        path: the file or folder that was being written, when ``exc`` does not name it.
    """
    where = path if path is not None else exc.filename
    if exc.errno == errno.EROFS or (where is not None and on_read_only_file_system(where)):
        return "read-only file system"
    return exc.strerror or str(exc)
