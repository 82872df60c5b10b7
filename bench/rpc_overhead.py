"""How much latency one contract call adds when its module is remote instead of in-process.

``python -m bench.rpc_overhead`` times sequential ``Echo.echo`` calls carrying a small message and a
1000x32 float32 tensor, each through ``app.kernel.calls.bind``, over three transports:

1. ``in-process``: the implementation itself, the baseline;
2. ``loopback``: ``app.kernel.codec.loopback``, a full msgpack round trip without I/O;
3. ``http``: ``RemoteModule`` to a real uvicorn process on 127.0.0.1 (``bench._echo_server``).

The client is pinned to one CPU and the server to another; results go to
``bench/results/rpc_overhead.json`` and ``.md``. See ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec
import uvloop

from app.kernel import calls, telemetry
from app.kernel.codec import loopback
from app.kernel.rpc import RemoteModule
from bench._echo import (
    CONTRACT_VERSION,
    MODULE,
    EchoAnswer,
    EchoRequest,
    EchoService,
    LocalEcho,
    check_echo,
    payloads,
)
from bench._echo_server import EchoServer
from bench._report import Report, Row, Setup, machine, markdown, write
from bench._timing import Stats, Timer, can_pin, pin_to_cpu, process_cpu_ns, warm_up

__all__ = ["main"]

BASELINE = "in-process"
REMOTE = "http"
RESULTS = Path(__file__).with_name("results")
SAMPLING = {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.01"}
"""Trace sampling as production sets it; inherited by the server process."""
_QUICK = {"warmup": 200, "small_calls": 2000, "tensor_calls": 400}

Echo = Callable[[EchoRequest], Awaitable[EchoAnswer]]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: measure, print the table and write the results."""
    args = _parser().parse_args(argv)
    if args.quick:
        vars(args).update(_QUICK)
    for variable, value in SAMPLING.items():
        os.environ.setdefault(variable, value)
    telemetry.configure(log_level="WARNING")
    load_at_start = os.getloadavg()[0]
    server_cpu = args.server_cpu if can_pin(args.server_cpu) else None
    with tempfile.TemporaryDirectory(prefix="quarry-bench-") as tmp:
        log = Path(tmp) / "server.log"
        with EchoServer(secrets.token_urlsafe(32), cpu=server_cpu, log=log) as server:
            client_cpu = pin_to_cpu(args.client_cpu)  # after the server started: it would inherit
            rows = uvloop.run(_measure_all(server, args))
    report = Report(
        machine=machine(load_at_start), setup=_setup(args, client_cpu, server_cpu), rows=rows
    )
    paths = write(report, args.output_dir, name="rpc_overhead", remote=REMOTE)
    print(markdown(report, remote=REMOTE))
    print("written: " + ", ".join(map(str, paths)), file=sys.stderr)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.rpc_overhead",
        description="Added latency of a remote contract call over an in-process one.",
    )
    parser.add_argument("--small-calls", type=int, default=5000, help="timed small calls")
    parser.add_argument("--tensor-calls", type=int, default=1000, help="timed tensor calls")
    parser.add_argument("--warmup", type=int, default=500, help="untimed calls before each")
    parser.add_argument(
        "--rounds", type=int, default=10, help="interleaved blocks the timed calls are split into"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="fewer calls, a run of about 10 s: "
        + ", ".join(f"{k}={v}" for k, v in _QUICK.items()),
    )
    parser.add_argument("--client-cpu", type=int, default=0, help="CPU of this process")
    parser.add_argument("--server-cpu", type=int, default=1, help="CPU of the server process")
    parser.add_argument("--output-dir", type=Path, default=RESULTS, help="where results go")
    return parser


async def _measure_all(server: EchoServer, args: argparse.Namespace) -> list[Row]:
    remote = RemoteModule(
        MODULE, server.url, EchoService, CONTRACT_VERSION, token=server.token, caller="bench"
    )
    counts = {"small": args.small_calls, "tensor": args.tensor_calls}
    try:
        transports = _transports(remote)
        rows: list[Row] = []
        for payload, request in payloads().items():
            for echo in transports.values():
                check_echo(request, await echo(request))
                await warm_up(echo, request, args.warmup)
            measured = await _interleaved(
                transports, request, counts[payload], args.rounds, server.pid
            )
            rows += _rows(payload, measured)
        return rows
    finally:
        await remote.aclose()


def _transports(remote: RemoteModule) -> dict[str, Echo]:
    """``Echo.echo`` bound through the call wrapper, by transport; the baseline first."""
    implementations: dict[str, tuple[Any, str]] = {
        BASELINE: (LocalEcho(), "local"),
        "loopback": (loopback(EchoService, LocalEcho()), "local"),
        REMOTE: (remote.proxy(), "remote"),
    }
    return {
        name: calls.bind(EchoService, impl, module=MODULE, caller="bench", placement=placement).echo
        for name, (impl, placement) in implementations.items()
    }


async def _interleaved(
    transports: dict[str, Echo], request: EchoRequest, calls: int, rounds: int, server_pid: int
) -> dict[str, tuple[Stats, float | None]]:
    """Each transport's stats, and the server's CPU µs per call meanwhile (remote only).

    The calls are made in ``rounds`` blocks per transport, taking turns.
    """
    timers = {name: Timer() for name in transports}
    server_ns = dict.fromkeys(transports, 0)
    for block in _blocks(calls, rounds):
        for name, echo in transports.items():
            before = process_cpu_ns(server_pid)
            await timers[name].run(echo, request, block)
            after = process_cpu_ns(server_pid)
            if before is not None and after is not None:
                server_ns[name] += after - before
    return {
        name: (timer.stats(), server_ns[name] / calls / 1000 if server_ns[name] else None)
        for name, timer in timers.items()
    }


def _blocks(calls: int, rounds: int) -> list[int]:
    """``calls`` split into ``rounds`` blocks (fewer when there are fewer calls)."""
    size, extra = divmod(calls, max(1, rounds))
    return [n for n in (size + (i < extra) for i in range(rounds)) if n > 0]


def _rows(payload: str, measured: dict[str, tuple[Stats, float | None]]) -> list[Row]:
    baseline = measured[BASELINE][0].p50_us
    rows = []
    for name, (stats, server_cpu) in measured.items():
        print(f"{payload:>6} over {name:<10} p50 {stats.p50_us:8.1f} µs", file=sys.stderr)
        rows.append(
            Row(
                payload=payload,
                transport=name,
                stats=stats,
                added_p50_us=round(stats.p50_us - baseline, 1),
                server_cpu_us=round(server_cpu, 1) if name == REMOTE and server_cpu else None,
            )
        )
    return rows


def _setup(args: argparse.Namespace, client_cpu: int | None, server_cpu: int | None) -> Setup:
    sizes = {name: len(msgspec.msgpack.encode(r)) for name, r in payloads().items()}
    return Setup(
        warmup=args.warmup,
        rounds=args.rounds,
        calls={"small": args.small_calls, "tensor": args.tensor_calls},
        payload_bytes=sizes,
        client_cpu=client_cpu,
        server_cpu=server_cpu,
        traces_sampler=os.environ["OTEL_TRACES_SAMPLER"],
        traces_sampler_arg=os.environ.get("OTEL_TRACES_SAMPLER_ARG", ""),
    )


if __name__ == "__main__":
    sys.exit(main())
