"""Several server processes on one port: ``quarry serve --workers N`` (``QUARRY_WORKERS``).

The supervisor (the process ``quarry serve`` started as) binds N listening sockets to the port
(``SO_REUSEPORT``: the kernel spreads new connections evenly over them), migrates every hosted
module's database once, then forks N workers that each build the whole platform and serve one of
the sockets. It starts no thread before forking and serves nothing itself; it keeps the sockets
open, so connections that reach a worker that died wait in its socket's queue for the worker that
replaces it.

What must run once still runs once: singleton loops take their lease in every worker (a file
lock beside a SQLite database, a PostgreSQL advisory lock, or a Redis key), so one worker leads
each. What each worker keeps for itself: its loaded models, response cache, rate-limit buckets
(unless ``QUARRY_RATE_LIMIT_URL`` or a Redis event bus shares them), idempotency replays, the
embedded task queue and its metrics on ``/metrics`` (a scrape reaches one worker). Answers say
which worker served them in ``x-quarry-worker`` (its process id).

Signals: SIGTERM or SIGINT to the supervisor is passed to every worker once (each drains as a
single server does) and a second one again (each stops at once); the workers run in a process
group of their own, so Ctrl-C in a terminal reaches them only through the supervisor. A worker
that dies after its first :data:`STEADY_S` seconds is replaced; one that dies sooner (a start-up
failure, which every worker would meet) stops them all, and ``quarry serve`` exits with its
status.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from types import FrameType

from app.cli.fatal import report
from app.cli.listen import listen
from app.kernel.settings import Settings

__all__ = ["STEADY_S", "supervise"]

STEADY_S = 10.0
"""A worker that ran this long before dying is replaced; one that died sooner stops the server."""


def supervise(settings: Settings, serve: Callable[[socket.socket], int]) -> int:
    """Run ``settings.workers`` processes, each calling ``serve`` with its listening socket,
    until a signal stops them; answer the exit status."""
    socks: list[socket.socket] = []
    try:
        for _ in range(settings.workers):  # a busy port fails here, before any work
            socks.append(listen(settings.host, settings.port, reuse_port=True))
        _migrate_once(settings)
        supervisor = _Supervisor(socks, serve)
        address = f"http://{settings.host}:{settings.port}"
        return supervisor.run(lambda pids: print(f"quarry serving on {address}, workers {pids}"))
    finally:
        for sock in socks:
            sock.close()


def _migrate_once(settings: Settings) -> None:
    """Bring every hosted module's database to its newest revision before any worker starts,
    so the workers' own start-up finds nothing to do (alembic on one SQLite file from several
    processes at once would race)."""
    from app.cli.commands import migrate_hosted

    migrate_hosted(settings, quiet=True)


class _Supervisor:
    def __init__(self, socks: list[socket.socket], serve: Callable[[socket.socket], int]) -> None:
        self.socks = socks
        self.serve = serve
        self.children: dict[int, tuple[socket.socket, float]] = {}  # pid -> its socket, start
        self.signals = 0
        self.status = 0

    def run(self, announce: Callable[[list[int]], None]) -> int:
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            for sock in self.socks:
                self._start(sock)
            announce(sorted(self.children))
            sys.stdout.flush()
            while self.children:
                try:
                    pid, status = os.wait()
                except ChildProcessError:
                    break
                self._ended(pid, os.waitstatus_to_exitcode(status))
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)
        return self.status

    def _on_signal(self, number: int, _frame: FrameType | None) -> None:
        self.signals += 1
        self._tell_all(signal.SIGTERM)

    def _tell_all(self, number: int) -> None:
        for pid in list(self.children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, number)

    def _ended(self, pid: int, code: int) -> None:
        ended = self.children.pop(pid, None)
        if ended is None or self.signals:
            return
        sock, started = ended
        if time.monotonic() - started >= STEADY_S:
            print(f"quarry: worker {pid} ended ({code}); starting another", file=sys.stderr)
            self._start(sock)
            return
        print(f"quarry: worker {pid} ended ({code}) while starting; stopping", file=sys.stderr)
        self.status = code if code > 0 else 1
        self.signals += 1
        self._tell_all(signal.SIGTERM)

    def _start(self, sock: socket.socket) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:
            for other in self.socks:
                if other is not sock:
                    other.close()
            os._exit(_worker(lambda: self.serve(sock), parent))
        self.children[pid] = (sock, time.monotonic())


def _worker(serve: Callable[[], int], parent: int) -> int:
    """The body of a forked worker: its own process group, gone when the supervisor is, the
    default signal handlers (the server installs its own), then ``serve``."""
    code = 1
    try:
        os.setpgid(0, 0)
        for number in (signal.SIGTERM, signal.SIGINT):
            signal.signal(number, signal.SIG_DFL)
        _end_with(parent)
        code = serve()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException as exc:  # one readable line, as `quarry` itself prints
        code = report(exc)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    return code


def _end_with(parent: int) -> None:
    """Have the kernel send this process SIGTERM when the supervisor dies (Linux), so a killed
    supervisor leaves no workers serving behind it."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # it died before that took effect
        raise SystemExit(1)
