"""The Echo contract behind a real ``uvicorn`` process, served the way ``quarry serve`` serves RPC.

The child (``python -m bench._echo_server --port N --cpu C``, token in ``QUARRY_SERVICE_TOKEN``)
builds the kernel's HTTP app with the middleware of ``app.bootstrap.create_app`` (auth with the
service token, idempotency, the auth guard) and the RPC router of the Echo contract, then runs it
with uvloop and httptools and the settings of ``app.cli``. :class:`EchoServer` starts and stops it.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import httpx
import uvicorn
import uvloop
from litestar import Litestar

from app.kernel import calls, telemetry
from app.kernel.auth import KeyStore
from app.kernel.http.app import ModuleStatus, create_http_app
from app.kernel.http.auth import auth_guard, auth_middleware
from app.kernel.http.idempotency import IdempotencyMiddleware
from app.kernel.rpc import rpc_router
from app.kernel.settings import Settings
from bench._echo import CONTRACT_VERSION, MODULE, EchoService, LocalEcho
from bench._timing import pin_to_cpu

__all__ = ["HOST", "EchoServer", "build_app", "main"]

HOST = "127.0.0.1"
_TOKEN_VARIABLE = "QUARRY_SERVICE_TOKEN"


class _EchoPlatform:
    """The :class:`~app.kernel.http.app.PlatformView` of a process hosting only Echo."""

    draining = False
    """Never told to stop: the server is stopped by the benchmark, not drained."""

    def readiness(self) -> dict[str, bool]:
        return {MODULE: True}

    def module_statuses(self) -> list[ModuleStatus]:
        version = "{}.{}".format(*CONTRACT_VERSION)
        return [ModuleStatus(name=MODULE, placement="local", url=None, contract_version=version)]


def build_app(token: str, data_dir: Path) -> Litestar:
    """The HTTP app of a process hosting Echo, put together as ``app.bootstrap.create_app`` does."""
    settings = Settings(data_dir=data_dir, service_token=token, host=HOST)
    client = calls.bind(EchoService, LocalEcho(), module=MODULE, caller="http")
    return create_http_app(
        settings=settings,
        platform=_EchoPlatform(),
        route_handlers=[rpc_router(MODULE, EchoService, CONTRACT_VERSION, client, settings)],
        middleware=[
            auth_middleware(settings, KeyStore(settings.keys_file), host=HOST),
            IdempotencyMiddleware(),
        ],
        guards=[auth_guard],
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the server process."""
    parser = argparse.ArgumentParser(prog="python -m bench._echo_server")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cpu", type=int, help="pin the process to this CPU")
    args = parser.parse_args(argv)
    pin_to_cpu(args.cpu)
    telemetry.configure(log_level="WARNING")
    with tempfile.TemporaryDirectory(prefix="quarry-bench-") as data_dir:
        app = build_app(os.environ[_TOKEN_VARIABLE], Path(data_dir))
        config = uvicorn.Config(
            app,
            host=HOST,
            port=args.port,
            loop="uvloop",
            http="httptools",
            log_config=None,
            access_log=False,
            lifespan="on",
        )
        uvloop.run(uvicorn.Server(config).serve())
    return 0


class EchoServer:
    """The server process, for a ``with`` block: started and ready on entry, stopped on exit."""

    def __init__(self, token: str, *, cpu: int | None, log: Path) -> None:
        self.port = _free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.token = token
        self._cpu = cpu
        self._log = log
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> EchoServer:
        command = [sys.executable, "-m", "bench._echo_server", "--port", str(self.port)]
        if self._cpu is not None:
            command += ["--cpu", str(self._cpu)]
        with self._log.open("wb") as log:
            self._process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, _TOKEN_VARIABLE: self.token},
            )
        try:
            self._wait_until_ready(timeout_s=30)
        except BaseException:
            self._stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop()

    def _wait_until_ready(self, timeout_s: float) -> None:
        assert self._process is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"echo server exited:\n{self._log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)  # polling a condition with a deadline
        raise RuntimeError(f"echo server not ready in {timeout_s} s:\n{self._log.read_text()}")

    def _stop(self) -> None:
        if self._process is None or self._process.poll() is not None:
            return
        self._process.send_signal(signal.SIGTERM)
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(timeout=10)

    @property
    def pid(self) -> int:
        """The server process id (to read its CPU time, or attach a profiler)."""
        if self._process is None:
            raise RuntimeError("the echo server has not been started")
        return self._process.pid


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


if __name__ == "__main__":
    sys.exit(main())
