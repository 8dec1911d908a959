"""What each command's `--help` ends with: the environment variables it reads, an example.

The variables are read off the command's own options (so they cannot drift from what it
reads); the examples are written here, one per command, and a test checks that every
command has one and that each parses.
"""

from __future__ import annotations

import click

# Read by every command through the profile (see `partners.profiles`), beside its options'.
PROFILE_VARIABLES = ("CLEANROOM_PROFILE",)
COLLABORATION_VARIABLE = "CLEANROOM_COLLABORATION"

EXAMPLES: dict[str, str] = {
    "audit export": "cleanroom-partner audit export --collaboration spring-launch"
    " --format parquet --out log.parquet",
    "audit list": "cleanroom-partner audit list --collaboration spring-launch --caller acme"
    " --since 2026-11-01T00:00:00Z",
    "audit verify": "cleanroom-partner audit verify --collaboration spring-launch"
    " --log-key log-verifier.key",
    "audit witness": "cleanroom-partner audit witness --collaboration spring-launch"
    " --witness-key witness.key --log-key log-verifier.key --every 60s",
    "audit witness-keygen": "cleanroom-partner audit witness-keygen --name acme.example/witness"
    " --out witness.key",
    "blind work": "cleanroom-partner blind work --blind-key spring-launch.blindkey --every 5m",
    "blind-key": "cleanroom-partner blind-key --collaboration spring-launch"
    " --out spring-launch.blindkey",
    "budget": "cleanroom-partner budget --collaboration spring-launch",
    "config show": "cleanroom-partner --profile acme config show",
    "datasets delete": "cleanroom-partner datasets delete acme-customers"
    " --collaboration spring-launch",
    "datasets list": "cleanroom-partner datasets list --collaboration spring-launch --shared",
    "datasets show": "cleanroom-partner datasets show acme-customers --collaboration spring-launch",
    "kcv": "cleanroom-partner kcv --collaboration spring-launch --secret-file collaboration.secret",
    "keygen": "cleanroom-partner keygen --collaboration spring-launch --out collaboration.secret",
    "prepare": "cleanroom-partner prepare customers.csv digests.parquet --collaboration"
    " spring-launch --secret-file collaboration.secret --column email=email"
    " --column mobile=phone --default-region TH",
    "report create": "cleanroom-partner report create --collaboration spring-launch"
    " --base acme-customers --other brightmart-customers",
    "report get": "cleanroom-partner report get 1 --collaboration spring-launch",
    "report html": "cleanroom-partner report html 1 --collaboration spring-launch"
    " --out report.html",
    "report list": "cleanroom-partner report list --collaboration spring-launch",
    "resolve": "cleanroom-partner resolve --source crm.csv:email=email,mobile=phone"
    " --out people.parquet",
    "upload": "cleanroom-partner upload digests.parquet --dataset-id acme-customers"
    " --blind-key spring-launch.blindkey",
}


def variables_of(command: click.Command) -> list[str]:
    """The environment variables a command reads: its options', then the profile's."""
    found: list[str] = []
    for parameter in command.params:
        names = (
            parameter.envvar if isinstance(parameter.envvar, (list, tuple)) else [parameter.envvar]
        )
        found.extend(name for name in names if isinstance(name, str) and name not in found)
        if parameter.name == "collaboration" and COLLABORATION_VARIABLE not in found:
            found.append(COLLABORATION_VARIABLE)
    return [*found, *PROFILE_VARIABLES]


def annotate(command: click.Command, path: str) -> None:
    """Sets the epilog of `command` (and of each subcommand of a group) from the table."""
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            annotate(sub, f"{path} {name}")
        return
    if command.epilog:
        return
    lines = ["Environment: " + ", ".join(variables_of(command)) + "."]
    example = EXAMPLES.get(path)
    if example:
        lines += ["", "Example:", "", "\b", f"  {example}"]
    command.epilog = "\n".join(lines)
