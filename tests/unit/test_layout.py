"""The layout holds: imports flow one way between packages, and the toolkit stands alone.

Each package of the server and the toolkit has a layer; a module may import only from its
own package or from packages of lower layers. The toolkit imports only the common part of
`cleanroom` (the generated API, the log's proofs and the double-blind group), and importing every one of its
modules loads neither SciPy, OpenDP nor any server module.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Top to bottom: a module imports from its own unit or from units further down the list.
LAYERS = [
    ("cleanroom", "partners"),  # the packages' own __init__ files, which re-export
    ("cleanroom.__main__", "partners.__main__"),
    ("cleanroom.cli",),
    ("cleanroom.demo",),
    ("cleanroom.service",),
    ("cleanroom.ops",),
    ("cleanroom.usecases",),
    ("cleanroom.audit",),
    ("cleanroom.storage",),
    ("cleanroom.privacy",),
    ("cleanroom.matching",),
    ("cleanroom.tls",),
    ("cleanroom.config",),
    ("cleanroom.paging",),
    ("cleanroom.names",),
    ("cleanroom.errors",),
    ("partners.cli", "partners.__main__"),
    ("partners.reports",),
    ("partners.audit",),
    ("partners.client",),
    ("partners.masking",),
    ("partners.render", "partners.frames"),
    ("partners.figures",),
    ("partners.inert",),
    ("partners.preparation",),
    ("partners.profiles",),
    ("partners.errors",),
    ("cleanroom.proofs", "cleanroom.group"),
    ("cleanroom.v1",),
]
COMMON = ("cleanroom.v1", "cleanroom.proofs", "cleanroom.group")
# The demo plays the brands beside the server: the one server package that uses the toolkit.
USES_THE_TOOLKIT = ("cleanroom.demo",)


def _unit(module: str) -> tuple[int, str]:
    """The layer and unit (package or top-level module) a module belongs to."""
    best: tuple[int, str] | None = None
    for rank, units in enumerate(LAYERS):
        for unit in units:
            if (module == unit or module.startswith(unit + ".")) and (
                best is None or len(unit) > len(best[1])
            ):
                best = (rank, unit)
    assert best is not None, f"{module} belongs to no layer: add it to LAYERS"
    return best


def _modules() -> dict[str, Path]:
    found = {}
    for package in ("cleanroom", "partners"):
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if "v1" in parts:
                continue
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def _imports(path: Path) -> list[str]:
    """The project modules a file imports (`from package import module` names the module)."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                names.append(submodule if submodule in MODULES else node.module)
        elif isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
    return [n for n in names if n.split(".")[0] in ("cleanroom", "partners")]


MODULES = _modules()


def _real_modules(imported: str) -> str:
    """The module an imported name lives in (a class or function names its module)."""
    while imported not in MODULES and "." in imported and not imported.startswith("cleanroom.v1"):
        imported = imported.rsplit(".", 1)[0]
    return imported


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_flow_one_way(module: str) -> None:
    rank, unit = _unit(module)
    for imported in {_real_modules(i) for i in _imports(MODULES[module])}:
        their_rank, their_unit = _unit(imported)
        if their_unit == unit:
            continue
        assert their_rank > rank, f"{module} imports {imported}, a layer above or beside it"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_private_module_is_imported_from_another_package(module: str) -> None:
    package = module if MODULES[module].name == "__init__.py" else module.rsplit(".", 1)[0]
    for imported in {_real_modules(i) for i in _imports(MODULES[module])}:
        if imported.rsplit(".", 1)[-1].startswith("_") and not imported.endswith("__main__"):
            assert imported.rsplit(".", 1)[0] == package, f"{module} imports {imported}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_server_and_toolkit_stand_on_the_common_part_only(module: str) -> None:
    for imported in {_real_modules(i) for i in _imports(MODULES[module])}:
        if module.startswith("partners"):
            assert imported.startswith(("partners", *COMMON)), f"{module} imports {imported}"
        elif imported.startswith("partners"):
            assert module.startswith(USES_THE_TOOLKIT), f"{module} imports {imported}"


def test_importing_the_toolkit_loads_no_server_code() -> None:
    toolkit = sorted(m for m in MODULES if m.startswith("partners") and "__main__" not in m)
    script = (
        "import importlib, json, sys\n"
        f"for name in {toolkit!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    loaded = json.loads(
        subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=ROOT
        ).stdout
    )
    heavy = [m for m in loaded if m.split(".")[0] in ("scipy", "opendp", "pandas")]
    assert not heavy, heavy
    server = [
        m
        for m in loaded
        if m.startswith("cleanroom.") and not m.startswith(tuple(f"{c}" for c in COMMON))
    ]
    assert not server, server


@pytest.mark.parametrize("package", ["cleanroom", "partners"])
def test_importing_a_package_loads_nothing_heavy(package: str) -> None:
    script = f"import json, sys; import {package}; print(json.dumps(sorted(sys.modules)))"
    loaded = json.loads(
        subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=ROOT
        ).stdout
    )
    heavy = [m for m in loaded if m.split(".")[0] in ("grpc", "pyarrow", "numpy", "scipy")]
    assert not heavy, heavy


def test_every_package_says_what_it_holds() -> None:
    for module, path in MODULES.items():
        if path.name == "__init__.py":
            docstring = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
            assert docstring, f"{module} has no docstring"
            assert "import" in docstring.lower(), (
                f"{module}'s docstring does not say what it imports"
            )


def _dependencies(pyproject: Path) -> dict[str, str]:
    import tomllib

    listed = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["dependencies"]
    return {re.split(r"[<>=!~ \[]", d, maxsplit=1)[0]: d for d in listed}


def test_the_toolkit_distribution_depends_on_what_the_project_does() -> None:
    toolkit = _dependencies(ROOT / "packaging" / "cleanroom-partner" / "pyproject.toml")
    project = _dependencies(ROOT / "pyproject.toml")
    assert {name: project.get(name) for name in toolkit} == toolkit
    assert not {"scipy", "opendp", "pandas", "grpcio-health-checking"} & set(toolkit)


def test_the_toolkit_extras_are_the_projects_too() -> None:
    import tomllib

    path = ROOT / "packaging" / "cleanroom-partner" / "pyproject.toml"
    extras = tomllib.loads(path.read_text(encoding="utf-8"))["project"]["optional-dependencies"]
    project = _dependencies(ROOT / "pyproject.toml")
    for listed in extras.values():
        wanted = {re.split(r"[<>=!~ \[]", d, maxsplit=1)[0]: d for d in listed}
        assert {name: project.get(name) for name in wanted} == wanted


def test_drawing_libraries_load_only_when_a_report_is_drawn() -> None:
    script = (
        "import json, sys\n"
        "import partners.reports, partners.reports.page, partners.reports.charts\n"
        "import partners.reports.workbook, partners.cli.reports\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    loaded = json.loads(
        subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=ROOT
        ).stdout
    )
    heavy = [
        m
        for m in loaded
        if m.split(".")[0] in ("matplotlib", "matplotlib_venn", "jinja2", "openpyxl")
    ]
    assert not heavy, heavy


def test_the_command_table_matches_the_commands() -> None:
    import importlib

    from partners.cli import COMMANDS, main

    for name, (module, attribute, short_help) in COMMANDS.items():
        command = getattr(importlib.import_module(f"partners.cli.{module}"), attribute)
        assert command.name == name
        assert command.get_short_help_str(limit=1000) == short_help
        assert main.get_command(None, name) is command  # type: ignore[arg-type]
