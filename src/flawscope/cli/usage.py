"""How the command line presents itself: help pages, usage lines and usage errors.

Typer's defaults show ``{data}`` for a required argument, ``<bool>`` beside every flag and
``<str>`` beside free text, read help strings as Rich markup (``[bad/]`` vanished) and draw usage
errors in a box, while flawscope's own errors are one ``error:`` line. The command and group
classes here make every command look the same: click-style metavars (``DATA``, ``PATH``,
``[csv|parquet]``), nothing beside flags, help text printed as written, and :func:`usage_error_line`
turns a usage mistake into the same one line as any other error.
"""

from __future__ import annotations

import inspect
import re
from typing import Any

import typer.core
from rich.markup import escape

try:  # Typer >= 0.29 vendors click as typer._click; older versions use click itself
    from typer import _click as click
except ImportError:  # pragma: no cover - depends on the installed Typer
    import click  # type: ignore[no-redef]

#: The exceptions a usage mistake raises while the command line is parsed.
ClickException = click.exceptions.ClickException


class _AbsentError(Exception):
    """Stands in for an exception class an older click does not have."""


NoArgsIsHelpError: type[Exception] = getattr(click.exceptions, "NoArgsIsHelpError", _AbsentError)

# Typer's type labels ("<float>", "<int range>") and the click-style metavar shown instead.
_METAVARS = {"str": "TEXT", "int": "INTEGER", "float": "FLOAT", "path": "PATH", "int range": "INTEGER"}
_FLOAT_RANGE = "float range"
# reStructuredText that docstrings use and users must not see: ``code``, :mod:`x`, :class:`~a.B`.
_RST_ROLE = re.compile(r":[a-z]+:`~?([^`]+)`")
_RST_CODE = re.compile(r"``([^`]+)``")


def plain_text(text: str) -> str:
    """Docstring text as a user should read it: reStructuredText roles and code marks removed.

    ``:mod:`flawscope.models.coreset``` becomes ``flawscope.models.coreset``, ``:class:`~a.B```
    becomes ``B`` and ````x```` becomes ``x``.
    """

    def role(match: re.Match[str]) -> str:
        target = match.group(1)
        return (
            target.rsplit(".", 1)[-1] if match.group(0).startswith(":") and "~" in match.group(0) else target
        )

    return _RST_CODE.sub(r"\1", _RST_ROLE.sub(role, text))


class _Argument(typer.core.TyperArgument):
    """An argument shown as ``DATA`` (``[DATA]`` when optional), without a type label."""

    def display_type_rich(self, ctx: Any) -> str | None:
        return None

    def _usage_display_name(self) -> str:
        name = str(self.metavar or self.name or "").upper()
        return name if self.required else f"[{name}]"


class _Option(typer.core.TyperOption):
    """An option shown with a click-style metavar; flags show none, choices list their values."""

    def display_type_rich(self, ctx: Any) -> str | None:
        if self.is_flag:
            return None
        if self.metavar is not None:
            return str(self.metavar)
        label = str(super().display_type_rich(ctx) or "").strip("<>").removesuffix("...")
        descriptor = getattr(self, "type_descriptor", None)
        if "|" in label or getattr(descriptor, "is_choice", False):
            return f"[{label}]"
        if label.startswith("list[") and label.endswith("]"):
            label = label[5:-1]
        return _METAVARS.get(label, "FLOAT" if label == _FLOAT_RANGE else label.upper())


def _restyle(param: Any) -> None:
    # Help strings are plain text: "[bad/]" must print as written, not vanish as Rich markup.
    if getattr(param, "help", None):
        param.help = escape(plain_text(param.help))
    if isinstance(param, typer.core.TyperArgument):
        param.__class__ = _Argument
        if param.metavar is None and param.name:
            param.metavar = param.name.upper()
    elif isinstance(param, typer.core.TyperOption):
        param.__class__ = _Option


def _unwrap(text: str) -> str:
    """Docstring paragraphs as single lines, for Rich to wrap to the terminal.

    The source's own line breaks would break lines mid-sentence on any other width.
    """
    paragraphs = inspect.cleandoc(text).split("\n\n")
    return "\n\n".join(" ".join(line.strip() for line in p.splitlines()) for p in paragraphs)


def restyle(command: Any) -> Any:
    """Give a built command tree flawscope's help style (see the module docstring), in place.

    Applied once to the whole tree in :func:`flawscope.cli.app.main`, so a command module added
    later looks like the others without doing anything.

    Args:
        command: the click command or group built by ``typer.main.get_command``.

    Returns:
        The same command.
    """
    if command.help:
        command.help = escape(_unwrap(plain_text(command.help)))
    if command.short_help:
        command.short_help = escape(plain_text(command.short_help))
    if command.epilog:
        command.epilog = escape(plain_text(command.epilog))
    for param in command.params:
        _restyle(param)
    help_option = command.get_help_option(click.Context(command))
    if help_option is not None:  # made on first use, so styled here to look like the others
        _restyle(help_option)
    for sub in getattr(command, "commands", {}).values():
        restyle(sub)
    return command


# Pydantic's wording of a value Typer could not convert, and what a user reads instead.
_CONVERSIONS = {"int_parsing": "is not a whole number", "float_parsing": "is not a number"}


def _value_problem(exc: BaseException) -> str | None:
    """``'abc' is not a whole number`` when Typer's conversion (pydantic) failed, else None."""
    errors = getattr(exc.__cause__, "errors", None)
    if not callable(errors):
        return None
    try:
        first = errors()[0]
    except Exception:
        return None
    problem = _CONVERSIONS.get(str(first.get("type")))
    return f"{first.get('input')!r} {problem}" if problem else None


def usage_error_line(exc: Any) -> str:
    """One line for a usage mistake (missing argument, bad value): the problem and where help is.

    Args:
        exc: the ``ClickException`` (usually a ``UsageError``) raised while parsing.
    """
    message = " ".join(str(exc.format_message()).split()).replace("Value error, ", "")
    param = getattr(exc, "param", None)
    converted = _value_problem(exc)
    if converted and param is not None:
        hint = " / ".join(f"'{name}'" for name in param.opts) or f"'{param.name}'"
        message = f"invalid value for {hint}: {converted}"
    if message[:1].isupper() and not message[1:2].isupper():
        message = message[0].lower() + message[1:]
    message = message.removesuffix(".")
    ctx = getattr(exc, "ctx", None)
    if ctx is None:
        return message
    return f"{ctx.command_path}: {message} (see '{ctx.command_path} --help')"
