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
