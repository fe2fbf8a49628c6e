"""The ``autoprune`` console script: parse options, call the facades, print.

Loading models and data (:mod:`autoprune.loading`), searching (:mod:`autoprune.api`), refining
(:mod:`autoprune.refine`) and the tables and files (:mod:`autoprune.report`) live elsewhere, shared with
Python callers; the commands import them only when they run, so ``--help`` and usage errors answer without
loading torch. The package: :mod:`~autoprune.cli.options` (the options several commands share),
:mod:`~autoprune.cli.running` (exit codes, signals, error messages, the progress bar),
:mod:`~autoprune.cli.searching` (``search``, ``analyze``: a model and its data) and
:mod:`~autoprune.cli.stored` (``report``, ``export``, ``refine``: a finished search).

Exit codes: 0 done, 1 unexpected error, 2 usage or bad input, 130 interrupted (Ctrl-C), 143 terminated
(SIGTERM); after either, re-run the same command to resume. Errors print one paragraph; ``--debug`` adds the traceback.

    autoprune search --budget-ms 5              # the embedded digits default
    autoprune report --out runs/digits
    autoprune export --out runs/digits --to exported/
"""

from __future__ import annotations

import typer

from autoprune.cli.searching import analyze, search
from autoprune.cli.stored import export, refine, report

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Search per-layer pruning policies under latency and size budgets.")
for command in (search, analyze, report, export):
    app.command()(command)
app.command(name="refine")(refine)


def main() -> None:
    """The console script's entry point."""
    app()
