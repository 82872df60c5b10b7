"""Serving at defaults: ``quarry serve`` with one and two workers against a FastAPI baseline.

``python -m bench.serving_baselines`` serves the MLP of ``bench._mlp`` from, one at a time:

- ``quarry-1w``: ``quarry serve`` at its defaults (granian, no trace exporter so no span
  recorded, batching on), auth on with a predict-scope key;
- ``quarry-2w``: the same with ``--workers 2``;
- ``fastapi-async``: ``bench/baselines/fastapi_async.py``, an ``async def`` endpoint calling
  onnxruntime, on uvicorn with uvloop and httptools, one worker;
- ``quarry-1w-uvicorn``: ``quarry-1w`` with ``QUARRY_HTTP_SERVER=uvicorn``, the other server
  ``quarry serve`` offers.

``wrk`` posts one-row requests at concurrency 64 and 64-row requests at concurrency 8. Nothing is
pinned: the server processes and ``wrk`` share the machine's cores, as two workers need. Each row
gives throughput, p50/p99 latency and the CPU time of the server's whole process tree per answered
request. Quarry's per-key rate limit is raised (``QUARRY_RATE_LIMIT_PER_S``) so that it never
refuses the load generator; it is still checked on every request. Results go to
``bench/results/serving_baselines.json`` and ``.md``; ``--quick`` runs a second per load (the
test that it completes).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

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
    "fastapi-async": ("fastapi-async", {}),
}
"""Name -> (the ``bench.predict_http.server`` to start, extra environment)."""
LOADS = ((1, 64), (64, 8))
"""(rows per request, concurrency) of each measured load."""
DEFAULTS = {"QUARRY_LOG_LEVEL": "WARNING"}
"""The only setting beyond auth and the rate limit: warnings only, as a production log level."""


class Run(msgspec.Struct, frozen=True, kw_only=True):
    """One server under one load: the load as ``wrk`` saw it, the server's RSS (MiB, all its
    processes) after it, and its CPU time (all processes, all threads) per answered request."""

    server: str
    rows_per_request: int
    load: Load
    rss_mib: float | None
    server_cpu_us_per_request: float | None


class Report(msgspec.Struct, frozen=True, kw_only=True):
    machine: Machine
    duration_s: float
    warmup_s: float
    model: str
    runs: list[Run]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: measure every server under every load, print the table, write the results."""
    args = _parser().parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is missing: apt-get install -y wrk", file=sys.stderr)
        return 2
    if args.quick:
        args.duration, args.warmup = 1.0, 1.0  # wrk takes whole seconds
    load_at_start = os.getloadavg()[0]
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="quarry-bench-serving-") as tmp:
        folder = Path(tmp)
        model = write_model(folder / "mlp.onnx")
        for name, (kind, env) in SERVERS.items():
            data = folder / name
            data.mkdir()
            started = server(kind, data, model, None, 0, {**env, **DEFAULTS}, sampling=DEFAULTS)
            with started as (url, pid, headers):
                for rows, connections in LOADS:
                    script = lua_script(data / f"{rows}.lua", request_body(rows), headers)
                    runs.append(_measure(name, url, pid, script, rows, connections, args))
    report = Report(
        machine=machine(load_at_start),
        duration_s=args.duration,
        warmup_s=args.warmup,
        model="MLP " + "->".join(map(str, LAYERS)) + " FP32, onnx.helper, random weights",
        runs=runs,
    )
    text = markdown(report)
    json_path, md_path = save(report, args.output_dir, "serving_baselines", text)
    print(text)
    print(f"written: {json_path}, {md_path}", file=sys.stderr)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.serving_baselines",
        description="quarry serve at defaults (1 and 2 workers) vs a FastAPI async baseline.",
    )
    parser.add_argument("--duration", type=float, default=15, help="seconds of each timed run")
    parser.add_argument("--warmup", type=float, default=3, help="untimed seconds before each")
    parser.add_argument("--quick", action="store_true", help="a second per load: it completes")
    parser.add_argument("--output-dir", type=Path, default=RESULTS, help="where results go")
    return parser


def _measure(
    name: str,
    url: str,
    pid: int,
    script: Path,
    rows: int,
    connections: int,
    args: argparse.Namespace,
) -> Run:
    run_wrk(url, script, connections=connections, duration_s=args.warmup, cpu=None)
    cpu_start = _tree_cpu_ns(pid)
    load = run_wrk(url, script, connections=connections, duration_s=args.duration, cpu=None)
    cpu_end = _tree_cpu_ns(pid)
    cpu_us = round((cpu_end - cpu_start) / load.requests / 1000, 1) if load.requests else None
    rss = [rss_mib(p) for p in _tree(pid)]
    print(
        f"{name:<14} rows={rows:<3} c={connections:<3} {load.requests_per_s:9.1f} req/s"
        f"  p50 {load.p50_ms:7.2f} ms  p99 {load.p99_ms:7.2f} ms  cpu {cpu_us} µs/req"
        f"  non-2xx {load.non_2xx}",
        file=sys.stderr,
    )
    return Run(
        server=name,
        rows_per_request=rows,
        load=load,
        rss_mib=round(sum(r for r in rss if r is not None), 1) if rss else None,
        server_cpu_us_per_request=cpu_us,
    )


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


def markdown(report: Report) -> str:
    """The report as markdown: one table per load, then the setup."""
    lines = ["# Serving at defaults: Quarry (1 and 2 workers) vs FastAPI async", ""]
    for rows, connections in LOADS:
        runs = [
            r
            for r in report.runs
            if (r.rows_per_request, r.load.connections) == (rows, connections)
        ]
        baseline = next((r for r in runs if r.server == "fastapi-async"), None)
        lines += [
            f"**{rows} row(s) per request, concurrency {connections}**",
            "",
            "| server | requests | req/s | p50 (ms) | p99 (ms) | non-2xx | RSS (MiB)"
            " | server CPU/request (µs) | req/s vs FastAPI |",
            "|---|--:|--:|--:|--:|--:|--:|--:|--:|",
        ]
        for run in runs:
            load = run.load
            ratio = (
                f"{load.requests_per_s / baseline.load.requests_per_s:.2f}x"
                if baseline is not None and baseline.load.requests_per_s
                else ""
            )
            cpu = run.server_cpu_us_per_request
            lines.append(
                f"| {run.server} | {load.requests:,} | {load.requests_per_s:,.0f}"
                f" | {load.p50_ms:.2f} | {load.p99_ms:.2f} | {load.non_2xx + load.socket_errors}"
                f" | {run.rss_mib} | {'' if cpu is None else f'{cpu:.0f}'} | {ratio} |"
            )
        lines.append("")
    m = report.machine
    libraries = ", ".join(f"{k} {v}" for k, v in m.libraries.items())
    lines += [
        f"- machine: {m.cpu_model}, {m.cores} cores; {m.platform}; python {m.python}; {libraries}",
        f"- date: {m.date}; 1-minute load average {m.load_1m[0]} at the start,"
        f" {m.load_1m[1]} at the end (other work on the machine sways latency; CPU per request"
        " much less)",
        f"- model: {report.model}; wrk -t1, {report.warmup_s:g} s untimed then"
        f" {report.duration_s:g} s timed per load; nothing pinned",
        "- quarry: `quarry serve` at its defaults (granian, no trace exporter), QUARRY_AUTH=on"
        " with a predict-scope key, QUARRY_RATE_LIMIT_PER_S raised so the limit never refuses wrk,"
        " QUARRY_LOG_LEVEL=WARNING; quarry-2w adds QUARRY_WORKERS=2, quarry-1w-uvicorn"
        " QUARRY_HTTP_SERVER=uvicorn",
        "- fastapi-async: uvicorn, one worker, uvloop + httptools, no access log",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
