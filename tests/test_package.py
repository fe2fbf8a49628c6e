"""The package's public names: each resolves to its defining module's object, and loads only when used."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

import autoprune

REPO = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "lightning", "optuna", "ray", "torch_pruning")


def _fresh_python(code: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_importing_the_cli_loads_no_heavy_dependency():
    """`autoprune --help` and usage errors need only typer and rich: torch, Lightning, Optuna, Ray and
    Torch-Pruning stay unimported until a command runs."""
    loaded = _fresh_python(f"import sys, autoprune, autoprune.cli; print([m for m in {HEAVY!r} if m in sys.modules])")
    assert loaded == "[]"


def test_the_cli_reaches_no_backend_directly():
    """The console script parses and prints; backends are wired by the facade: running its commands' help
    and importing it loads no module of autoprune.backends."""
    loaded = _fresh_python("import sys; from typer.testing import CliRunner; from autoprune.cli import app; "
                           "[CliRunner().invoke(app, [c, '--help']) for c in ('search', 'analyze', 'report', 'export', 'refine')]; "
                           "print(sorted(m for m in sys.modules if m.startswith('autoprune.backends')))")
    assert loaded == "[]"


def test_help_lists_every_command_without_importing_torch():
    """The help text is complete although nothing heavy was imported for it."""
    out = _fresh_python("import sys; from typer.testing import CliRunner; from autoprune.cli import app; "
                        "print(CliRunner().invoke(app, ['--help']).output); print('torch' in sys.modules)")
    for command in ("search", "analyze", "report", "export", "refine"):
        assert command in out
    assert out.splitlines()[-1] == "False"


@pytest.mark.parametrize("name", autoprune.__all__)
def test_every_public_name_is_its_modules_object(name):
    """`autoprune.X` is the very object its module defines (not a copy or wrapper)."""
    module = importlib.import_module(autoprune._EXPORTS[name])
    assert getattr(autoprune, name) is getattr(module, name)
    assert name in dir(autoprune)


def test_unknown_name_raises_attribute_error_naming_it():
    """A misspelt name fails as a normal missing attribute, with the name in the message."""
    with pytest.raises(AttributeError, match="serach"):
        autoprune.serach  # noqa: B018


def test_functions_named_like_their_module_survive_the_submodule_import():
    """`autoprune.measure` and `autoprune.prune` stay the functions after their submodules load, in
    either order of first use."""
    out = _fresh_python("import autoprune.measure, autoprune.prune, autoprune; "
                        "print(callable(autoprune.measure), callable(autoprune.prune), "
                        "autoprune.measure.__module__, autoprune.prune.__module__)")
    assert out == "True True autoprune.measure autoprune.prune"


def test_every_module_has_its_line_in_the_architecture_doc():
    """docs/architecture.md names every module of the package (or its sub-package as ``dir/``): the map stays true."""
    doc = (REPO / "docs" / "architecture.md").read_text()
    package = REPO / "autoprune"
    missing = [str(path.relative_to(package)) for path in sorted(package.rglob("*.py"))
               if path.name not in ("__init__.py", "__main__.py")
               and f"`{path.relative_to(package).as_posix()}`" not in doc
               and not (path.parent != package and f"`{path.parent.relative_to(package).as_posix()}/`" in doc)]
    assert not missing, f"docs/architecture.md does not say what these modules are for: {missing}"


def test_every_sub_package_is_installed():
    """pyproject's package list holds every sub-package of autoprune: an installed wheel has all of them."""
    import tomllib

    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(path.parent.relative_to(REPO).parts) for path in (REPO / "autoprune").rglob("__init__.py")}
    assert found <= listed, f"missing from pyproject's packages: {sorted(found - listed)}"


def _module_imports() -> dict[str, set[str]]:
    """Each autoprune module -> the autoprune modules it imports when it loads (its top level; imports inside
    functions and under ``if TYPE_CHECKING`` run later or never, so they make no cycle)."""
    import ast

    package = REPO / "autoprune"
    names = {".".join(p.with_suffix("").relative_to(REPO).parts).removesuffix(".__init__"): p
             for p in package.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in names.items():
        found: set[str] = set()
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("autoprune"):
                found |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in names else node.module
                          for a in node.names}
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.startswith("autoprune")}
        graph[name] = {m for m in found if m in names and m != name}
    return graph


def test_no_import_cycle_inside_the_package():
    """No autoprune module imports, through others, a module that imports it back (when they load)."""
    graph, done, cycles = _module_imports(), set(), []

    def visit(name: str, path: list[str]) -> None:
        if name in path:
            cycles.append(path[path.index(name):] + [name])
            return
        if name in done:
            return
        for target in sorted(graph[name]):
            visit(target, path + [name])
        done.add(name)

    for name in sorted(graph):
        visit(name, [])
    assert not cycles, f"import cycles: {[' -> '.join(c) for c in cycles]}"


def test_no_module_is_over_400_lines():
    """Each module keeps to one job: none grows past 400 lines (split it where its jobs part)."""
    long = {str(p.relative_to(REPO)): n for p in (REPO / "autoprune").rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 400}
    assert not long, f"split these modules: {long}"
