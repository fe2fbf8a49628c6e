"""Option groups: options declared once, shared by commands, received as one object."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import typer
from typer.testing import CliRunner

from autoprune.cli.groups import OptionGroup


@dataclass(frozen=True)
class Where:
    host: str
    port: int


WHERE = OptionGroup("where", Where, (("host", str, typer.Option("localhost", help="the host.")),
                                      ("port", int, typer.Option(80, help="the port."))))


def _app() -> typer.Typer:
    app = typer.Typer()
    seen = []

    @app.command()
    @WHERE
    def connect(name: str = typer.Option("x"), where: Where = None, debug: bool = typer.Option(False)) -> None:
        seen.append((name, where, debug))

    app.seen = seen
    return app


def test_a_command_receives_the_groups_options_as_one_object():
    app = _app()
    outcome = CliRunner().invoke(app, ["--host", "db", "--port", "5432", "--name", "n", "--debug"])
    assert outcome.exit_code == 0, outcome.output
    assert app.seen == [("n", Where("db", 5432), True)]


def test_help_lists_the_groups_options_where_the_group_stands():
    text = CliRunner().invoke(_app(), ["--help"], env={"COLUMNS": "200"}).output
    assert text.index("--name") < text.index("--host") < text.index("--port") < text.index("--debug")


def test_a_command_without_the_groups_parameter_is_a_programming_error():
    with pytest.raises(TypeError, match="no parameter 'where'"):
        WHERE(lambda debug=False: None)
