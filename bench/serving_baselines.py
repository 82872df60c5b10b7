"""Serving at defaults: ``quarry serve`` with one and two workers against a FastAPI baseline.

``python -m bench.serving_baselines`` serves the MLP of ``bench._mlp`` from:

- ``quarry-1w``: ``quarry serve`` at its defaults (``QUARRY_HTTP_SERVER=auto``, so granian for
  one worker on two cores; no trace exporter so no span recorded; batching on), auth on with a
  predict-scope key;
- ``quarry-2w``: the same with ``QUARRY_WORKERS=2`` (``auto`` is uvicorn once the workers fill
  every core);
- ``fastapi-async``: ``bench/baselines/fastapi_async.py``, an ``async def`` endpoint calling
  onnxruntime, on uvicorn with uvloop and httptools, one worker;
- ``quarry-1w-uvicorn`` and ``quarry-2w-granian``: each the other server for that many workers,
  the figures ``auto`` chooses by;
- ``quarry-1w-runner``: one worker with ``QUARRY_INFERENCE_INLINE_MAX_US=0``, so every batch
  runs on a runner thread, as every batch under load did before small models stayed on the
  event loop (the baseline of that choice).

All six are started first, at once; then, per load, ``wrk`` measures them in turn, for ``--rounds``
rounds, so that whatever else the machine does at a given minute touches every server alike. Each
comparison (against FastAPI, two workers against one) is made within a round, and the report gives
each round's figures and their median. ``wrk`` posts one-row requests at concurrency 64 and 64-row
requests at concurrency 8. Nothing is pinned: the server processes and ``wrk`` share the machine's
cores, as two workers need. Each run gives throughput, p50/p99 latency and the CPU time of the
server's whole process tree per answered request. Quarry's per-key rate limit is raised
(``QUARRY_RATE_LIMIT_PER_S``) so that it never refuses the load generator; it is still checked on
every request. Results go to ``bench/results/serving_baselines.json`` and ``.md``; ``--quick``
runs one round of a second per load with no warm-up (the test that it completes).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import msgspec

from bench._mlp import LAYERS, request_body, write_model
from bench._report import Machine, machine, save
from bench._timing import process_cpu_ns
from bench._wrk import Load, lua_script, run_wrk
from bench.predict_http import rss_mib, server

__all__ = ["LOADS", "SERVERS", "main"]

RESULTS = Path(__file__).with_name("results")
SERVERS: dict[str, tuple[str, dict[str, str]]] = {
    "quarry-1w": ("quarry", {}),
    "quarry-2w": ("quarry", {"QUARRY_WORKERS": "2"}),
    "quarry-1w-uvicorn": ("quarry", {"QUARRY_HTTP_SERVER": "uvicorn"}),
    "quarry-2w-granian": ("quarry", {"QUARRY_WORKERS": "2", "QUARRY_HTTP_SERVER": "granian"}),
    "quarry-1w-runner": ("quarry", {"QUARRY_INFERENCE_INLINE_MAX_US": "0"}),
    "fastapi-async": ("fastapi-async", {}),
}
"""Name -> (the ``bench.predict_http.server`` to start, extra environment)."""
LOADS = ((1, 64), (64, 8))
"""(rows per request, concurrency) of each measured load."""
DEFAULTS = {"QUARRY_LOG_LEVEL": "WARNING"}
"""The only setting beyond auth and the rate limit: warnings only, as a production log level."""


class Run(msgspec.Struct, frozen=True, kw_only=True):
    """One server under one load in one round: the load as ``wrk`` saw it, the server's RSS (MiB,
    all its processes) after it, its CPU time (all processes, all threads) per answered request,
    and the cores the server and ``wrk`` kept busy on average (CPU seconds per second)."""

    server: str
    rows_per_request: int
    round: int
    load: Load
    rss_mib: float | None
    server_cpu_us_per_request: float | None
    server_cores: float
    wrk_cores: float


class Figure(msgspec.Struct, frozen=True, kw_only=True):
    """One server under one load over every round: medians, and the ratios made within rounds."""

    server: str
    rows_per_request: int
    requests_per_s: float
    """The median round's throughput."""
    server_cpu_us_per_request: float | None
    vs_fastapi: list[float]
    """Per round: this server's throughput over FastAPI's in the same round."""
    vs_one_worker: list[float]
    """Per round: this server's throughput over ``quarry-1w``'s in the same round."""


class Report(msgspec.Struct, frozen=True, kw_only=True):
    machine: Machine
    duration_s: float
    warmup_s: float
    rounds: int
    model: str
    runs: list[Run]
    figures: list[Figure]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: measure every server under every load, print the table, write the results."""
    args = _parser().parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is missing: apt-get install -y wrk", file=sys.stderr)
        return 2
    if args.quick:
        args.duration, args.warmup, args.rounds = 1.0, 0.0, 1  # wrk takes whole seconds
    load_at_start = os.getloadavg()[0]
    runs: list[Run] = []
    with (
        tempfile.TemporaryDirectory(prefix="quarry-bench-serving-") as tmp,
        contextlib.ExitStack() as servers,
    ):
        started = _start_all(servers, Path(tmp))
        for rows, connections in LOADS:
            for turn in range(args.rounds):
                for name, (url, pid, data, headers) in started.items():
                    script = lua_script(data / f"{rows}.lua", request_body(rows), headers)
                    runs.append(_measure(name, url, pid, script, (rows, connections, turn), args))
    report = Report(
        machine=machine(load_at_start),
        duration_s=args.duration,
        warmup_s=args.warmup,
        rounds=args.rounds,
        model="MLP " + "->".join(map(str, LAYERS)) + " FP32, onnx.helper, random weights",
        runs=runs,
        figures=figures(runs),
    )
    text = markdown(report)
    json_path, md_path = save(report, args.output_dir, "serving_baselines", text)
    print(text)
    print(f"written: {json_path}, {md_path}", file=sys.stderr)
    return 0


def _start_all(
    servers: contextlib.ExitStack, folder: Path
) -> dict[str, tuple[str, int, Path, dict[str, str]]]:
    """Start every server at once (a start is mostly Python starting up: key creation, the
    server, its model) and have ``servers`` stop them; name -> (URL, pid, folder, headers)."""
    model = write_model(folder / "mlp.onnx")
    starting: dict[str, tuple[Path, contextlib.AbstractContextManager[Any]]] = {}
    for name, (kind, extra) in SERVERS.items():
        data = folder / name
        data.mkdir()
        env = {**extra, **DEFAULTS}
        starting[name] = (data, server(kind, data, model, None, 0, env, sampling=DEFAULTS))
    with ThreadPoolExecutor(max_workers=len(starting)) as pool:  # leaving it waits for all
        entered = {name: pool.submit(m.__enter__) for name, (_, m) in starting.items()}
    started: dict[str, tuple[str, int, Path, dict[str, str]]] = {}
    errors = [e for f in entered.values() if (e := f.exception()) is not None]
    for name, future in entered.items():
        if future.exception() is None:
            data, manager = starting[name]
            servers.push(manager.__exit__)
            url, pid, headers = future.result()
            started[name] = (url, pid, data, headers)
    if errors:
        raise errors[0]  # the servers that did start are stopped by ``servers``
    return started


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.serving_baselines",
        description="quarry serve at defaults (1 and 2 workers) vs a FastAPI async baseline.",
    )
    parser.add_argument("--duration", type=float, default=8, help="seconds of each timed run")
    parser.add_argument("--warmup", type=float, default=2, help="untimed seconds before each")
    parser.add_argument("--rounds", type=int, default=3, help="turns of every server per load")
    parser.add_argument(
        "--quick", action="store_true", help="one round of a second per load, no warm-up"
    )
    parser.add_argument("--output-dir", type=Path, default=RESULTS, help="where results go")
    return parser


def _measure(
    name: str,
    url: str,
    pid: int,
    script: Path,
    load_round: tuple[int, int, int],
    args: argparse.Namespace,
) -> Run:
    """``name`` under ``rows`` per request at ``connections`` in round ``turn``."""
    rows, connections, turn = load_round
    if args.warmup > 0:
        run_wrk(url, script, connections=connections, duration_s=args.warmup, cpu=None)
    cpu_start, wrk_start, started = _tree_cpu_ns(pid), _children_cpu_s(), time.perf_counter()
    load = run_wrk(url, script, connections=connections, duration_s=args.duration, cpu=None)
    cpu_end, wrk_end, elapsed = _tree_cpu_ns(pid), _children_cpu_s(), time.perf_counter() - started
    cpu_us = round((cpu_end - cpu_start) / load.requests / 1000, 1) if load.requests else None
    rss = [rss_mib(p) for p in _tree(pid)]
    print(
        f"round {turn} {name:<17} rows={rows:<3} c={connections:<3}"
        f" {load.requests_per_s:9.1f} req/s"
        f"  p50 {load.p50_ms:7.2f} ms  p99 {load.p99_ms:7.2f} ms  cpu {cpu_us} µs/req"
        f"  non-2xx {load.non_2xx}",
        file=sys.stderr,
    )
    return Run(
        server=name,
        rows_per_request=rows,
        round=turn,
        load=load,
        rss_mib=round(sum(r for r in rss if r is not None), 1) if rss else None,
        server_cpu_us_per_request=cpu_us,
        server_cores=round((cpu_end - cpu_start) / 1e9 / elapsed, 2),
        wrk_cores=round((wrk_end - wrk_start) / elapsed, 2),
    )


def _children_cpu_s() -> float:
    """CPU seconds of this process's finished children: ``wrk`` runs, once each is waited for
    (the servers are still running, so they do not count)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (a supervisor and its workers)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        try:
            tasks = Path(f"/proc/{current}/task").iterdir()
            for task in tasks:
                todo.extend(int(c) for c in (task / "children").read_text().split())
        except OSError:
            continue
    return found


def _tree_cpu_ns(pid: int) -> int:
    return sum(process_cpu_ns(p) or 0 for p in _tree(pid))


def figures(runs: list[Run]) -> list[Figure]:
    """Per server and load: the median round, and each round's ratios to FastAPI and to one
    worker (made within the round, so that the machine's other work touches both sides)."""
    by_key = {(r.server, r.rows_per_request, r.round): r for r in runs}
    out = []
    for rows, _ in LOADS:
        for name in SERVERS:
            mine = sorted(
                (r for r in runs if (r.server, r.rows_per_request) == (name, rows)),
                key=lambda r: r.round,
            )
            if not mine:
                continue
            cpu = [r.server_cpu_us_per_request for r in mine]
            out.append(
                Figure(
                    server=name,
                    rows_per_request=rows,
                    requests_per_s=round(statistics.median(r.load.requests_per_s for r in mine), 1),
                    server_cpu_us_per_request=(
                        round(statistics.median(c for c in cpu if c is not None), 1)
                        if any(c is not None for c in cpu)
                        else None
                    ),
                    vs_fastapi=_ratios(mine, by_key, "fastapi-async"),
                    vs_one_worker=_ratios(mine, by_key, "quarry-1w"),
                )
            )
    return out


def _ratios(mine: list[Run], by_key: dict[tuple[str, int, int], Run], other: str) -> list[float]:
    """Per round: ``mine``'s throughput over ``other``'s in that round (none where missing)."""
    ratios = []
    for run in mine:
        base = by_key.get((other, run.rows_per_request, run.round))
        if base is not None and base.load.requests_per_s:
            ratios.append(round(run.load.requests_per_s / base.load.requests_per_s, 3))
    return ratios


def _ratio_cell(ratios: list[float]) -> str:
    """``**1.23x** (1.10, 1.23, 1.40)``: the median in bold, then each round."""
    if not ratios:
        return ""
    rounds = f" ({', '.join(f'{r:.2f}' for r in ratios)})" if len(ratios) > 1 else ""
    return f"**{statistics.median(ratios):.2f}x**{rounds}"


def markdown(report: Report) -> str:
    """The report as markdown: one table per load (medians over rounds), then the setup."""
    lines = ["# Serving at defaults: Quarry (1 and 2 workers) vs FastAPI async", ""]
    for rows, connections in LOADS:
        lines += [
            f"**{rows} row(s) per request, concurrency {connections}**"
            f" (median of {report.rounds} round(s); ratios made within each round)",
            "",
            "| server | req/s | req/s per round | p50 (ms) | p99 (ms) | non-2xx | RSS (MiB)"
            " | server CPU/request (µs) | cores busy: server + wrk | req/s vs FastAPI"
            " | req/s vs quarry-1w |",
            "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
        ]
        for figure in (f for f in report.figures if f.rows_per_request == rows):
            mine = [
                r for r in report.runs if (r.server, r.rows_per_request) == (figure.server, rows)
            ]
            median = min(mine, key=lambda r: abs(r.load.requests_per_s - figure.requests_per_s))
            failed = sum(r.load.non_2xx + r.load.socket_errors for r in mine)
            per_round = " / ".join(f"{r.load.requests_per_s:,.0f}" for r in mine)
            cpu = figure.server_cpu_us_per_request
            lines.append(
                f"| {figure.server} | {figure.requests_per_s:,.0f} | {per_round}"
                f" | {median.load.p50_ms:.2f} | {median.load.p99_ms:.2f} | {failed}"
                f" | {median.rss_mib} | {'' if cpu is None else f'{cpu:.0f}'}"
                f" | {median.server_cores:.2f} + {median.wrk_cores:.2f}"
                f" | {_ratio_cell(figure.vs_fastapi)} | {_ratio_cell(figure.vs_one_worker)} |"
            )
        lines.append("")
    m = report.machine
    libraries = ", ".join(f"{k} {v}" for k, v in m.libraries.items())
    lines += [
        f"- machine: {m.cpu_model}, {m.cores} cores; {m.platform}; python {m.python}; {libraries}",
        f"- date: {m.date}; 1-minute load average {m.load_1m[0]} at the start,"
        f" {m.load_1m[1]} at the end (other work on the machine sways latency; CPU per request"
        " much less)",
        f"- model: {report.model}; every server started first, then per load {report.rounds}"
        f" round(s) of each in turn: wrk -t1, {report.warmup_s:g} s untimed then"
        f" {report.duration_s:g} s timed; p50, p99 and RSS from the median round; nothing pinned",
        "- quarry: `quarry serve` at its defaults (no trace exporter), QUARRY_AUTH=on"
        " with a predict-scope key, QUARRY_RATE_LIMIT_PER_S raised so the limit never refuses wrk,"
        " QUARRY_LOG_LEVEL=WARNING, QUARRY_HTTP_SERVER at its default (auto); quarry-2w adds"
        " QUARRY_WORKERS=2; quarry-1w-uvicorn sets QUARRY_HTTP_SERVER=uvicorn, quarry-2w-granian"
        " QUARRY_WORKERS=2 and QUARRY_HTTP_SERVER=granian, quarry-1w-runner"
        " QUARRY_INFERENCE_INLINE_MAX_US=0 (every batch on a runner thread)",
        "- fastapi-async: uvicorn, one worker, uvloop + httptools, no access log",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
