"""What ``quarry`` prints when a command fails: one line on stderr, and a documented exit status.

The exception is unwrapped (exception groups, explicit causes, the context it was raised in) to
the first error that explains itself — bad configuration, a busy port, an unreachable server, a
contract error — else to the root cause. The full traceback is printed only with ``--debug``.
"""

from __future__ import annotations

import sys
import traceback
from typing import TextIO

from app.cli.listen import CannotListen
from app.kernel.reach import Unreachable, causes
from app.kernel.settings import ConfigError, Settings
from contracts.common import QuarryError, Unavailable

__all__ = [
    "EXIT_CONFIG",
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "EXIT_UNAVAILABLE",
    "explain",
    "report",
]

EXIT_FAILURE = 1
"""The command failed: an unexpected error, a failed training job or quickstart stage."""
EXIT_CONFIG = 2
"""Bad configuration or usage: a setting, a flag, a missing package (fix it, then rerun)."""
EXIT_UNAVAILABLE = 3
"""Something outside Quarry is not there: a busy port, an unreachable Redis, PostgreSQL or
remote module (rerunning later may succeed)."""
EXIT_INTERRUPTED = 130
"""Interrupted (Ctrl-C)."""

_MAX_LINE = 500


def explain(exc: BaseException, settings: Settings | None = None) -> tuple[str, int]:
    """The one line to print for ``exc`` (without the ``quarry:`` prefix) and the exit status.

    ``settings``, when they were loaded, let a remote module's failure name its
    ``QUARRY_REMOTE_<M>`` setting.
    """
    chain = list(causes(exc))
    for cause in chain:
        if isinstance(cause, ConfigError):
            return f"configuration error: {_one_line(str(cause))}", EXIT_CONFIG
        if isinstance(cause, CannotListen | Unreachable):
            return str(cause), EXIT_UNAVAILABLE
        if isinstance(cause, QuarryError):
            return _contract_error(cause, settings)
        if isinstance(cause, ModuleNotFoundError) and cause.name:
            top = cause.name.split(".", 1)[0]
            return f"the package {top!r} is not installed ({cause})", EXIT_CONFIG
    root = chain[-1]
    text = _one_line(str(root).strip().splitlines()[0] if str(root).strip() else "")
    what = f"{type(root).__name__}: {text}" if text else type(root).__name__
    return f"{what} (--debug shows the traceback)", EXIT_FAILURE


def report(
    exc: BaseException,
    *,
    debug: bool = False,
    settings: Settings | None = None,
    stream: TextIO | None = None,
) -> int:
    """Print ``exc`` as one line (after its traceback with ``debug``); answer the exit status."""
    out = stream if stream is not None else sys.stderr
    if debug:
        traceback.print_exception(exc, file=out)
    message, status = explain(exc, settings)
    print(f"quarry: {message}", file=out, flush=True)
    return status


def _contract_error(error: QuarryError, settings: Settings | None) -> tuple[str, int]:
    message = f"{error.code}: {_one_line(error.message)}"
    module = error.details.get("module")
    if settings is not None and isinstance(module, str) and module in settings.remotes:
        message += f" (QUARRY_REMOTE_{module.upper()})"
    return message, EXIT_UNAVAILABLE if isinstance(error, Unavailable) else EXIT_FAILURE


def _one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= _MAX_LINE else line[: _MAX_LINE - 3] + "..."
