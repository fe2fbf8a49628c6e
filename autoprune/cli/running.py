"""How a command runs: its errors mapped to exit codes and one-paragraph messages (a storage outage told
apart from a bug, no password ever shown), SIGTERM handled as Ctrl-C, and the search's progress bar."""

from __future__ import annotations

import signal
import threading
import traceback
from typing import Any, Callable

import typer
from rich.console import Console
from rich.progress import Progress

from autoprune.errors import AutopruneInputError, Terminated

#: messages and progress (stderr); tables and results go to ``out_console`` (stdout)
console = Console(stderr=True, soft_wrap=True)
out_console = Console()


def progress_callback(progress: Progress, task: Any, metric_name: str) -> Callable:
    def update(record: Any, result: Any) -> None:
        best = result.best()
        best_text = f"{best.metric:.4f}" if best else "none yet"
        done = sum(1 for t in result.trials if t.counts)  # every worker's, as the study counts them
        rungs = [sum(1 for t in result.trials if t.complete and t.rung == r)
                 for r in range(1 + max((t.rung for t in result.trials), default=0))]
        rung_text = f"rungs {'/'.join(map(str, rungs))} " if len(rungs) > 1 else ""
        progress.update(task, completed=done, front=len(result.pareto),
                        best=f"{rung_text}best {metric_name} in budget: {best_text}")
    return update


#: exception classes (by name, as their libraries raise them) that mean the study's storage stopped answering
OUTAGES = ("OperationalError", "InterfaceError", "DisconnectionError", "StorageInternalError")


def storage_outage(exc: BaseException | None) -> BaseException | None:
    """The deepest error in ``exc``'s chain that says the study's storage stopped answering (None: not an outage);
    Optuna's own wrapper blames "invalid data in the commit", what it wraps says what happened."""
    found, seen = None, set()
    while exc is not None and id(exc) not in seen:  # the error, and what it was raised from
        seen.add(id(exc))
        if any(c.__name__ in OUTAGES and c.__module__.split(".")[0] in ("sqlalchemy", "optuna", "psycopg2")
               for c in type(exc).__mro__):
            found = exc
        exc = exc.__cause__ or exc.__context__
    return found


def thread_error(args: threading.ExceptHookArgs) -> None:
    what = "the study's storage stopped answering" if storage_outage(args.exc_value) is not None else "it stopped"
    console.print(f"[bold yellow]warning:[/] background thread {args.thread.name if args.thread else '?'}: "
                  f"{type(args.exc_value).__name__} ({what}; --debug shows the traceback)", highlight=False)


def terminate(signum: int, frame: Any) -> None:
    raise Terminated(f"signal {signum}")


def run(debug: bool, body: Callable[[], None], *,
         interrupted: str = "finished trials are kept; run the same command again to resume.") -> None:
    """Run a command body, mapping errors to the documented exit codes; SIGTERM is handled as Ctrl-C is
    (the running trial recorded interrupted, files written) and exits 143. ``interrupted`` is what an
    interrupt leaves, as the user is told."""
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, terminate) if main else None
    previous_hook = threading.excepthook
    if not debug:  # a background thread's error (a heartbeat on a storage that went away) in one line
        threading.excepthook = thread_error
    from autoprune.backends.storage import mask_url  # no message ever shows a storage password

    try:
        body()
    except AutopruneInputError as exc:
        if debug:
            traceback.print_exc()
        console.print(f"[bold red]error:[/] {mask_url(str(exc))}", highlight=False)
        raise typer.Exit(2)
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (Terminated)
        what = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
        console.print(f"{what}: {interrupted}")
        raise typer.Exit(143 if isinstance(exc, Terminated) else 130)
    except typer.Exit:
        raise
    except Exception as exc:
        if debug:
            traceback.print_exc()
        outage = storage_outage(exc)
        if outage is not None:
            first = (mask_url(str(outage)).strip().splitlines() or [""])[0][:300]
            console.print(f"[bold red]error:[/] the study's storage stopped answering ({type(outage).__name__}: {first}). "
                          "Finished trials are kept in it; when it answers again, run the same command to resume.",
                          highlight=False)
        else:
            console.print(f"[bold red]unexpected error:[/] {type(exc).__name__}: {mask_url(str(exc))} (run with --debug for the "
                          "traceback)", highlight=False)
        raise typer.Exit(1)
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)
        threading.excepthook = previous_hook
