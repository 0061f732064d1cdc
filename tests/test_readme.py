"""The README's Python examples run as written.

Every ```python block is executed in its own interpreter, in order, in one empty folder (a block
may use files an earlier one wrote, never its variables). A block that fails shows its output.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def python_blocks() -> list[str]:
    return BLOCK.findall(README.read_text())


def test_the_readme_has_python_examples():
    assert python_blocks(), f"no ```python block in {README}"


def test_every_python_block_of_the_readme_runs(tmp_path: Path):
    for number, code in enumerate(python_blocks(), start=1):
        script = tmp_path / f"readme_block_{number}.py"
        script.write_text(code)
        done = subprocess.run(
            [sys.executable, script.name], cwd=tmp_path, capture_output=True, text=True, timeout=600
        )
        if done.returncode != 0:
            pytest.fail(
                f"README python block {number} failed:\n{code}\n--- output ---\n{done.stdout}{done.stderr}"
            )


# --- The command lines of the README name real commands, options and choices -----------------------

BASH = re.compile(r"^```bash\n(.*?)^```", re.DOTALL | re.MULTILINE)
INLINE = re.compile(r"(?<!`)`(flawscope [^`]+)`(?!`)")


def command_lines() -> list[str]:
    """Every ``flawscope ...`` line of the README's bash blocks (indented lines continue the one above)
    and of its inline code, comments removed."""
    text = README.read_text()
    lines: list[str] = []
    for block in BASH.findall(text):
        for raw in block.splitlines():
            line = re.split(r"\s#\s", raw)[0].rstrip()
            if line.startswith("flawscope "):
                lines.append(line)
            elif line[:1].isspace() and line.strip() and lines and lines[-1].startswith("flawscope "):
                lines[-1] += " " + line.strip()
    lines += [" ".join(span.split()) for span in INLINE.findall(text)]
    # "flawscope export ... && flawscope inspect ...": each command on its own.
    commands = [part for line in lines for part in re.split(r"\s*(?:&&|;)\s*", line)]
    return [command for command in commands if command.startswith("flawscope ")]


def _tokens(line: str) -> list[str]:
    # Brackets and parentheses only group; a quoted value is one token.
    import shlex

    return shlex.split(re.sub(r"[\[\]()]", " ", line))[1:]


def _choices(option) -> list[str]:
    """The fixed values an option takes (a Literal or an Enum annotation), or []."""
    import enum
    import typing

    descriptor = getattr(option, "type_descriptor", None)
    annotation = getattr(descriptor, "annotation", None)
    if typing.get_origin(annotation) is typing.Literal:
        return [str(value) for value in typing.get_args(annotation)]
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return [str(member.value) for member in annotation]
    return []


def check_command_line(line: str, root) -> list[str]:
    """The problems of one README command line: unknown commands, options or choices.

    ``a|b`` is a choice of subcommands or values; a lone ``|`` followed by a subcommand starts an
    alternative (``keys list | create``), whose options are checked against that subcommand.
    """
    problems: list[str] = []
    # Duck-typed: Typer builds its commands with its own vendored click.
    group, parent, leaves = root, root, [root]
    tokens = _tokens(line)
    i = 0
    while i < len(tokens):
        token = tokens[i]
        nxt = tokens[i + 1] if i + 1 < len(tokens) else ""
        if token == "|":
            if nxt.split("|")[0] in parent.commands and parent is not group:
                group = parent  # the next token is another subcommand of the same group
        elif group is not None and not token.startswith("-"):
            names = token.split("|")
            unknown = [name for name in names if name not in group.commands]
            if unknown:
                problems.append(f"{line}: no command {' '.join(unknown)} under {group.name}")
                return problems
            parent, leaves = group, [group.commands[name] for name in names]
            sole = leaves[0] if len(leaves) == 1 else None
            group = sole if hasattr(sole, "commands") else None
        elif token.startswith("-") and token != "-":
            name, _, inline_value = token.partition("=")
            options = [
                p for leaf in leaves for p in leaf.params if p.param_type_name == "option" and name in p.opts
            ]
            if not options:
                where = " / ".join(leaf.name or "flawscope" for leaf in leaves)
                problems.append(f"{line}: {where} has no option {name}")
            elif not options[0].is_flag and not inline_value and nxt:
                choices = _choices(options[0])
                if choices and re.fullmatch(r"[a-z0-9_|-]+", nxt):
                    bad = [value for value in nxt.split("|") if value not in choices]
                    if bad:
                        problems.append(f"{line}: {name} does not take {', '.join(bad)} ({list(choices)})")
                i += 1
        i += 1
    return problems


def test_every_command_line_of_the_readme_names_real_commands_options_and_choices():
    import typer

    from flawscope.cli.app import app
    from flawscope.cli.usage import restyle

    root = restyle(typer.main.get_command(app))
    lines = command_lines()
    # Not vacuous: the reference block, the station walkthrough and the inline commands are read.
    assert len(lines) > 30, lines
    reference = [line for line in lines if line.startswith("flawscope inspect DEPLOY --source URI")]
    assert reference and "--show" in reference[0], "an indented line continues the one above"
    problems = [problem for line in lines for problem in check_command_line(line, root)]
    assert not problems, "\n".join(problems)


def test_the_command_line_check_finds_mistakes():
    import typer

    from flawscope.cli.app import app
    from flawscope.cli.usage import restyle

    root = restyle(typer.main.get_command(app))
    assert check_command_line("flawscope audit verify [--audit URL]", root) == []
    assert check_command_line("flawscope keys list | create | revoke KEY --reason TEXT", root) == []
    assert check_command_line("flawscope station check|run|status station.toml", root) == []
    assert check_command_line("flawscope --version", root) == []
    assert check_command_line("flawscope export B -o D", root) == []

    def problems(line: str) -> str:
        return " ".join(check_command_line(line, root))

    assert "no command vrify" in problems("flawscope audit vrify")
    assert "no option --holdout-off" in problems("flawscope calibrate B --holdout-off D")
    assert "does not take fast" in problems("flawscope inspect D --backpressure fast")
    assert "no option --reason" in problems("flawscope keys list --reason x")
