"""The run's side of a training process: start the child, hand it the work, read its answers.

:class:`TrainingProcess` starts ``python -m app.modules.training.child`` (a fresh interpreter:
nothing of this process's state, threads or locks is inherited, as a fork would), writes the
:class:`~app.modules.training.work.Work` to its stdin from a thread, and reads its answers from
another; its stderr goes to this process's log, line by line. Killing it is how a run stops it
(cancellation, time limit, shutdown); its stdin staying open is what keeps it alive.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable

from app.modules.training.work import Reply, Work, read, write

__all__ = ["CHILD", "WAITING", "TrainingProcess", "thread_budget"]

CHILD = "app.modules.training.child"
WAITING = object()
"""What :meth:`TrainingProcess.reply` answers when nothing came within its timeout."""
_TAIL = 5


def thread_budget(processes: int) -> int:
    """Threads each of ``processes`` training processes gets: the cores this process may run on
    but one (left to serving) shared between them, at least one each."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, ((cores or 1) - 1) // max(1, processes))


class TrainingProcess:
    """One child process doing one job's work."""

    def __init__(
        self,
        job_id: str,
        *,
        threads: int,
        logger: logging.Logger,
        torch: bool = True,
        on_line: Callable[[str], None] | None = None,
    ) -> None:
        self._job_id = job_id
        self._log = logger
        self._on_line = on_line
        """Also given each line the child prints (the job's log keeps them)."""
        self._replies: queue.Queue[Reply | None] = queue.Queue()
        self._tail: deque[str] = deque(maxlen=_TAIL)
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        command = [sys.executable, "-m", CHILD, "--job", job_id, "--threads", str(threads)]
        self._process = subprocess.Popen(  # noqa: S603 - this interpreter, a fixed module
            command if torch else [*command, "--no-torch"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,  # a Ctrl-C meant for the server is not the child's to take
        )
        self._reader = threading.Thread(
            target=self._read, name=f"training-{job_id}-answers", daemon=True
        )
        self._relay_thread = threading.Thread(
            target=self._relay, name=f"training-{job_id}-log", daemon=True
        )
        self._writer: threading.Thread | None = None
        self._reader.start()
        self._relay_thread.start()

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self._process.pid

    def send(self, work: Work) -> None:
        """Hand over the work (from a thread: the child reads it once torch is imported)."""
        self._writer = threading.Thread(
            target=self._write, args=(work,), name=f"training-{self._job_id}-work", daemon=True
        )
        self._writer.start()

    def reply(self, timeout: float) -> Reply | object | None:
        """The child's next answer; ``None`` once it exited without more; :data:`WAITING`
        when nothing came within ``timeout`` seconds."""
        try:
            return self._replies.get(timeout=timeout)
        except queue.Empty:
            return WAITING

    def exit_reason(self) -> str:
        """Why the child ended without an answer (it has closed its answers)."""
        try:
            code = self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            return "the training process stopped answering"
        self._relay_thread.join(timeout=5)  # its last lines may say why
        if code < 0:
            name = _signal_name(-code)
            hint = ": killed, or out of memory" if -code == signal.SIGKILL else ""
            return f"training process killed by signal {-code} ({name}{hint})"
        last = f": {self._tail[-1]}" if self._tail else ""
        return f"training process exited with status {code}{last}"

    def kill(self) -> None:
        """End the child (if it still runs) and wait for it and the threads serving it."""
        if self._process.poll() is None:
            self._process.kill()
        self._process.wait()
        for stream in (self._process.stdin, self._process.stdout, self._process.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        for thread in (self._reader, self._relay_thread, self._writer):
            if thread is not None:
                thread.join(timeout=5)

    # --- threads ----------------------------------------------------------------------------

    def _write(self, work: Work) -> None:
        stdin = self._process.stdin
        assert stdin is not None
        # a child that died first: its answers (or its exit) say why; stdin stays open after
        with contextlib.suppress(OSError, ValueError):
            write(stdin, work)

    def _read(self) -> None:
        stdout = self._process.stdout
        assert stdout is not None
        try:
            while (reply := read(stdout)) is not None:
                self._replies.put(reply)
        except (OSError, ValueError):  # closed by kill()
            pass
        except Exception:  # a garbled answer: the child is not to be trusted further
            self._log.exception("training job %s: unreadable answer", self._job_id)
        self._replies.put(None)

    def _relay(self) -> None:
        stderr = self._process.stderr
        assert stderr is not None
        with contextlib.suppress(OSError, ValueError):
            for raw in stderr:
                line = raw.decode("utf-8", "replace").rstrip()
                if line:
                    self._tail.append(line)
                    self._log.info("training job %s: %s", self._job_id, line)
                    if self._on_line is not None:
                        self._on_line(line)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return "unknown signal"
