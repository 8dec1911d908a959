"""Every partner command's help says which environment variables it reads, with an example."""

from __future__ import annotations

import importlib
import shlex

import click
import pytest
from click.testing import CliRunner

from partners.cli import COMMANDS, main
from partners.cli._examples import EXAMPLES


def _leaf_commands() -> list[tuple[str, click.Command]]:
    found = []
    for name, (module, attribute, _) in COMMANDS.items():
        command = getattr(importlib.import_module(f"partners.cli.{module}"), attribute)
        if isinstance(command, click.Group):
            found.extend((f"{name} {sub}", c) for sub, c in command.commands.items())
        else:
            found.append((name, command))
    return found


@pytest.mark.parametrize(("path", "command"), _leaf_commands(), ids=str)
def test_every_command_help_lists_its_environment_and_an_example(
    path: str, command: click.Command
) -> None:
    assert path in EXAMPLES, f"`{path}` has no example in partners/cli/_examples.py"
    words = shlex.split(EXAMPLES[path])
    if words[1] == "--profile":  # the group's option, before the command
        words = [words[0], *words[3:]]
    assert words[: 1 + len(path.split())] == ["cleanroom-partner", *path.split()]
    command.make_context(path, words[1 + len(path.split()) :], resilient_parsing=True)
    help_text = CliRunner().invoke(main, [*path.split(), "--help"], terminal_width=200).output
    assert "Environment: " in help_text
    assert "CLEANROOM_PROFILE" in help_text
    assert EXAMPLES[path] in help_text


def test_no_example_names_a_command_that_does_not_exist() -> None:
    assert set(EXAMPLES) == {path for path, _ in _leaf_commands()}
