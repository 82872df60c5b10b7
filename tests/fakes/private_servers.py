"""Private Redis and PostgreSQL servers that a test may stop hard and start again.

Never the shared servers on 6379/5432: each one here has its own free port and its own folder.
PostgreSQL refuses to run as root, so when the tests run as root its commands run as the
``postgres`` system user (created as ``quarry-pg`` when there is none).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import IN_CI
from tests.fakes.server import free_port

__all__ = ["PrivatePostgres", "PrivateRedis", "unavailable_here"]

_START_S = 30.0


def unavailable_here(what: str) -> None:
    """Skip (locally) or fail (in CI) when a private server cannot be started here."""
    if IN_CI:
        pytest.fail(f"{what}; it is required when CI=true")
    pytest.skip(what)


class PrivateRedis:
    """A ``redis-server`` with append-only persistence, on a free port, in ``folder``."""

    def __init__(self, folder: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            unavailable_here("redis-server is not installed")
        self.binary = str(binary)
        self.folder = folder
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> PrivateRedis:
        """Start it (again, on the same port and data) and wait until it answers."""
        self.folder.mkdir(parents=True, exist_ok=True)
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir"]
        args += [str(self.folder), "--appendonly", "yes", "--appendfsync", "always", "--save", ""]
        args += ["--logfile", str(self.folder / "redis.log")]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + _START_S
        import redis

        client = redis.Redis.from_url(self.url, socket_timeout=1)
        try:
            while True:
                try:
                    client.ping()
                    return self
                except redis.RedisError:
                    if time.monotonic() > deadline or self.process.poll() is not None:
                        raise RuntimeError("the private redis-server did not start") from None
                    time.sleep(0.05)
        finally:
            client.close()

    def kill(self) -> None:
        """``SIGKILL``: no shutdown, no goodbye to clients."""
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
            self.process = None


class PrivatePostgres:
    """A PostgreSQL cluster made with ``initdb`` in a fresh folder, on a free port."""

    def __init__(self) -> None:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
        if not found:
            unavailable_here("PostgreSQL server binaries (/usr/lib/postgresql/*/bin) are missing")
        self.bin = Path(found[-1]).parent
        self.user = _server_user()
        self.folder = Path(tempfile.mkdtemp(prefix="quarry-pg-"))
        if self.user is not None:
            os.chown(self.folder, self.user.pw_uid, self.user.pw_gid)
        self.data = self.folder / "data"
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}"
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync")

    def start(self) -> PrivatePostgres:
        """Start it (again, after a crash too) and wait until it accepts connections."""
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.folder} -c fsync=off"
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.folder / "log"), "-o", options,
            "-w", "-t", str(int(_START_S)), "start",
        )  # fmt: skip
        return self

    def stop_immediately(self) -> None:
        """``pg_ctl stop -m immediate``: every backend dies at once, no checkpoint."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "stop")

    def create_database(self, name: str) -> str:
        """Create database ``name``; answer its URL."""
        import psycopg

        with psycopg.connect(f"{self.url}/postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"{self.url}/{name}"

    def destroy(self) -> None:
        """Stop the server (if running) and remove its folder."""
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop_immediately()
        shutil.rmtree(self.folder, ignore_errors=True)

    def _run(self, tool: str, *args: str) -> None:
        command = [str(self.bin / tool), *args]
        if self.user is not None:
            command = ["runuser", "-u", self.user.pw_name, "--", *command]
        subprocess.run(command, check=True, capture_output=True, cwd=self.folder, timeout=60)


def _server_user() -> pwd.struct_passwd | None:
    """``None`` when not root; else the system user PostgreSQL runs as."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "quarry-pg"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    if shutil.which("useradd") is None or shutil.which("runuser") is None:
        unavailable_here("running as root without a postgres user, useradd or runuser")
    subprocess.run(["useradd", "--system", "--no-create-home", "quarry-pg"], check=True)
    return pwd.getpwnam("quarry-pg")
