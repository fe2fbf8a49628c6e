"""Real components for the distributed tests: a throw-away PostgreSQL server and CLI worker processes.

PostgreSQL runs from the distribution's binaries (Debian: ``apt-get install postgresql``) in a
temporary directory on a loopback port, as the unprivileged ``postgres`` user when the tests run as
root (the server refuses root). Without the binaries the tests skip with how to install them, except
under CI (``CI=true``), where they fail instead.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import in_ci

REPO = Path(__file__).resolve().parents[2]
WORKERS_SPACE = REPO / "tests" / "data" / "workers.yaml"
PG_PASSWORD = "s3cret-pw"


def _pg_bindir() -> Path | None:
    candidates = [os.environ.get("PG_BIN", "")] + sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    if shutil.which("initdb"):
        candidates.append(str(Path(shutil.which("initdb")).resolve().parent))
    for directory in candidates:
        if directory and (Path(directory) / "initdb").is_file() and (Path(directory) / "pg_ctl").is_file():
            return Path(directory)
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PostgresServer:
    """A PostgreSQL cluster in a temporary directory; ``database(name)`` gives a fresh database URL."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="autoprune-pg-"))
        self.port = free_port()
        self.prefix: list[str] = []
        if os.geteuid() == 0:
            try:
                user = pwd.getpwnam("postgres")
            except KeyError:
                pytest.fail("running as root needs the 'postgres' user (created by the postgresql package)")
            os.chown(self.root, user.pw_uid, user.pw_gid)
            self.prefix = ["runuser", "-u", "postgres", "--"]
        pwfile = self.root / "pw"
        pwfile.write_text(PG_PASSWORD + "\n")
        if self.prefix:
            os.chown(pwfile, user.pw_uid, user.pw_gid)
        self.data = self.root / "data"
        self._run("initdb", "-D", str(self.data), "-U", "autoprune", f"--pwfile={pwfile}", "-E", "UTF8",
                  "--auth-host=scram-sha-256", "--auth-local=trust")
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "log"), "-w", "-t", "60", "-o", options,
                  "start")

    def _run(self, tool: str, *args: str) -> None:
        proc = subprocess.run([*self.prefix, str(self.bindir / tool), *args], capture_output=True, text=True,
                              cwd=self.root, timeout=120)
        if proc.returncode != 0:
            pytest.fail(f"{tool} failed: {proc.stderr or proc.stdout}")

    def url(self, database: str = "postgres", password: str = PG_PASSWORD) -> str:
        return f"postgresql+psycopg2://autoprune:{password}@127.0.0.1:{self.port}/{database}"

    def database(self, name: str) -> str:
        self._run("createdb", "-h", str(self.root), "-p", str(self.port), "-U", "autoprune", name)
        return self.url(name)

    def stop(self) -> None:
        subprocess.run([*self.prefix, str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_bindir() -> Path:
    """The PostgreSQL binaries' directory; without them the test skips, or fails under CI."""
    bindir = _pg_bindir()
    if bindir is None:
        message = ("PostgreSQL server binaries not found: install them (Debian: apt-get install postgresql) "
                   "or point PG_BIN at the directory holding initdb and pg_ctl")
        if in_ci():
            pytest.fail(message + " (CI=true: these tests must run)")
        pytest.skip(message)
    return bindir


@pytest.fixture(scope="session")
def postgres(pg_bindir):
    server = PostgresServer(pg_bindir)
    yield server
    server.stop()


@pytest.fixture
def pg_url(postgres, request):
    """A fresh database for one test."""
    name = "t_" + "".join(ch if ch.isalnum() else "_" for ch in request.node.name.lower())[:50]
    return postgres.database(name)


@pytest.fixture(scope="session")
def digits_weights(tmp_path_factory):
    """The embedded digits CNN trained once; copied into each worker's run directory."""
    from autoprune.demo import WEIGHTS_FILE, pretrained_digits_cnn

    cache = tmp_path_factory.mktemp("digits")
    pretrained_digits_cnn(cache)
    return cache / WEIGHTS_FILE


def interruptible() -> None:
    """In the child before it starts: Ctrl-C as a terminal would deliver it. A shell starts background jobs with
    SIGINT ignored, a child inherits that, and Python then never raises KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def cli(*args, env=None) -> list[str]:
    return [sys.executable, "-m", "autoprune.cli", *map(str, args)]


def start_worker(run_dir: Path, weights: Path, *args) -> subprocess.Popen:
    """An ``autoprune search`` worker process on the embedded digits default, one torch thread."""
    run_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(weights, run_dir / weights.name)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    log = open(run_dir / "worker.log", "w")
    return subprocess.Popen(cli("search", "--space", WORKERS_SPACE, "--out", run_dir, "--no-progress",
                                "--torch-threads", "1", *args),
                            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=interruptible)


def wait(proc: subprocess.Popen, run_dir: Path, timeout: float = 400) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        pytest.fail(f"worker did not finish in {timeout}s: {(run_dir / 'worker.log').read_text()[-3000:]}")


def log_of(run_dir: Path) -> str:
    return (run_dir / "worker.log").read_text()


def wait_until(condition, timeout: float = 300, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")
