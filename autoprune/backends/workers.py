"""Which process a study's trial or seeding belongs to, and whether that process died on this host.

A worker tags what it owns with :data:`WORKER` (``host:pid``); a run on the same host that finds the
owner's process gone takes over (re-queues its running trials, queues the seeds it never queued). An
owner on another host is never presumed dead here: heartbeats say that (see
:meth:`autoprune.backends.book.StudyBook.fail_stale`).

Example:
    >>> import os, socket
    >>> died_here(f"{socket.gethostname()}:{os.getpid()}"), died_here("elsewhere:1"), died_here("")
    (False, False, False)
"""

from __future__ import annotations

import os
import socket

#: this process, as it tags the trials it runs and the study it creates
WORKER = f"{socket.gethostname()}:{os.getpid()}"


def died_here(owner: str) -> bool:
    """True when ``owner`` (``host:pid``) names a process of this host that no longer runs."""
    host, _, pid = str(owner).rpartition(":")
    return host == socket.gethostname() and pid.isdigit() and not _alive(int(pid))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True
