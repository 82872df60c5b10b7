"""Server memory under sustained load: RSS of ``quarry serve`` over a long run at concurrency 64.

``python -m bench.soak`` starts the same server as ``bench.predict_http`` (``quarry serve``, auth
on, 1 % trace sampling, batching at its defaults, every module on), pinned to one CPU, loads it
with ``wrk`` from another for ``--warmup`` seconds, then for ``--duration`` seconds while sampling
its RSS every ``--interval`` seconds. With ``--workers N`` (``QUARRY_WORKERS``) neither is pinned
and the RSS and CPU are those of the whole process tree (the parent and every worker). The goal:
RSS grows under 5 % from the end of the warm-up to the end of the run, and no request fails.
Results go to ``bench/results/soak.json`` and ``.md`` (``soak-2w`` and so on with workers).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import msgspec

from bench._mlp import request_body, write_model
from bench._report import Machine, machine, save
from bench._timing import can_pin, process_cpu_ns
from bench._wrk import Load, lua_script, parse_wrk, wrk_command
from bench.predict_http import rss_mib, server

__all__ = ["main"]

RESULTS = Path(__file__).with_name("results")
GOAL_GROWTH = 0.05
"""The goal: RSS grows less than 5 % after the warm-up."""


class Sample(msgspec.Struct, frozen=True, array_like=True):
    """Seconds since the timed run started, and the server's RSS then (MiB)."""

    at_s: float
    rss_mib: float


class Report(msgspec.Struct, frozen=True, kw_only=True):
    machine: Machine
    workers: int
    processes: int
    connections: int
    warmup_s: float
    duration_s: float
    interval_s: float
    load: Load
    server_cpu_us_per_request: float | None
    rss_after_warmup_mib: float
    rss_end_mib: float
    rss_max_mib: float
    growth: float
    samples: list[Sample]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: load the server, sample its RSS, write the results."""
    args = _parser().parse_args(argv)
    if args.quick:
        args.duration, args.warmup, args.interval = 60.0, 10.0, 2.0
    if shutil.which("wrk") is None:
        print("wrk is missing: apt-get install -y wrk", file=sys.stderr)
        return 2
    load_at_start = os.getloadavg()[0]
    pinned = args.workers == 1
    server_cpu = 1 if pinned and can_pin(1) else None
    wrk_cpu = 0 if pinned and can_pin(0) else None
    env = {"QUARRY_WORKERS": str(args.workers)}
    with tempfile.TemporaryDirectory(prefix="quarry-bench-soak-") as tmp:
        folder = Path(tmp)
        model = write_model(folder / "mlp.onnx")
        with server("quarry-batching", folder, model, server_cpu, 0, env) as (url, pid, headers):
            script = lua_script(folder / "soak.lua", request_body(), headers)
            report = _soak(url, pid, script, args, wrk_cpu, load_at_start)
    text = markdown(report)
    name = "soak" if args.workers == 1 else f"soak-{args.workers}w"
    save(report, args.output_dir, name, text)
    print(text)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--duration", type=float, default=600, help="seconds of the timed run")
    parser.add_argument("--warmup", type=float, default=60, help="seconds of load before it")
    parser.add_argument("--interval", type=float, default=5, help="seconds between RSS samples")
    parser.add_argument("--connections", type=int, default=64, help="wrk concurrency")
    parser.add_argument("--workers", type=int, default=1, help="server processes (QUARRY_WORKERS)")
    parser.add_argument("--quick", action="store_true", help="60 s run after a 10 s warm-up")
    parser.add_argument("--output-dir", type=Path, default=RESULTS, help="where results go")
    return parser


def _soak(
    url: str,
    pid: int,
    script: Path,
    args: argparse.Namespace,
    wrk_cpu: int | None,
    load_at_start: float,
) -> Report:
    warm = wrk_command(url, script, connections=args.connections, duration_s=args.warmup)
    subprocess.run(_pinned(warm, wrk_cpu), capture_output=True, check=True)
    command = wrk_command(url, script, connections=args.connections, duration_s=args.duration)
    processes = _tree(pid)
    cpu_start = _total(process_cpu_ns, processes)
    started = time.monotonic()
    samples = [Sample(0.0, _total(rss_mib, processes) or 0.0)]
    with subprocess.Popen(_pinned(command, wrk_cpu), stdout=subprocess.PIPE, text=True) as wrk:
        while wrk.poll() is None:
            time.sleep(args.interval)
            rss = _total(rss_mib, processes)
            if rss is not None and wrk.poll() is None:
                samples.append(Sample(round(time.monotonic() - started, 1), round(rss, 1)))
        out = wrk.stdout.read() if wrk.stdout else ""
    cpu_end = _total(process_cpu_ns, processes)
    load = parse_wrk(out, args.connections)
    cpu_us = None
    if cpu_start is not None and cpu_end is not None and load.requests:
        cpu_us = round((cpu_end - cpu_start) / load.requests / 1000, 1)
    first, last = samples[0].rss_mib, samples[-1].rss_mib
    return Report(
        machine=machine(load_at_start),
        workers=args.workers,
        processes=len(processes),
        connections=args.connections,
        warmup_s=args.warmup,
        duration_s=args.duration,
        interval_s=args.interval,
        load=load,
        server_cpu_us_per_request=cpu_us,
        rss_after_warmup_mib=first,
        rss_end_mib=last,
        rss_max_mib=max(s.rss_mib for s in samples),
        growth=round((last - first) / first, 4) if first else 0.0,
        samples=samples,
    )


def _tree(pid: int) -> list[int]:
    """``pid`` and every process below it (a server's workers), from ``/proc``."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        try:
            tasks = list(Path(f"/proc/{current}/task").iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                todo += [int(child) for child in (task / "children").read_text().split()]
            except (OSError, ValueError):
                continue
    return found


def _total(measure: Callable[[int], float | None], pids: list[int]) -> float | None:
    """``measure`` summed over ``pids``; ``None`` when any of them cannot be measured (gone)."""
    total = 0.0
    for pid in pids:
        value = measure(pid)
        if value is None:
            return None
        total += value
    return total


def _pinned(command: list[str], cpu: int | None) -> list[str]:
    return command if cpu is None else ["taskset", "-c", str(cpu), *command]


def markdown(report: Report) -> str:
    """The report as markdown: the verdict, the RSS over time, the setup."""
    m, load = report.machine, report.load
    errors = load.non_2xx + load.socket_errors
    met = report.growth < GOAL_GROWTH and errors == 0
    if report.workers == 1:
        where, wrk_where = "pinned to CPU 1", " pinned to CPU 0"
    else:
        where = (
            f"`QUARRY_WORKERS={report.workers}` ({report.processes} processes, RSS and CPU summed"
            " over all), not pinned"
        )
        wrk_where = ", not pinned"
    lines = [
        "# Soak: server memory under sustained load",
        "",
        f"**Goal** (RSS grows under {GOAL_GROWTH:.0%} after the warm-up over the run at"
        f" concurrency {report.connections}, and no request fails):"
        f" **{'met' if met else 'missed'}**, RSS"
        f" {report.rss_after_warmup_mib:.1f} MiB after the warm-up, {report.rss_end_mib:.1f} MiB"
        f" at the end (**{report.growth:+.2%}**), {report.rss_max_mib:.1f} MiB at most.",
        "",
        f"Load: {load.requests:,} requests in {report.duration_s:g} s, {load.requests_per_s:,.0f}"
        f" req/s, p50 {load.p50_ms:.2f} ms, p99 {load.p99_ms:.2f} ms, {errors} failed; server"
        f" CPU {report.server_cpu_us_per_request} µs per request.",
        "",
        "| seconds | RSS (MiB) |",
        "|--:|--:|",
    ]
    step = max(1, len(report.samples) // 20)
    shown = [*report.samples[::step], report.samples[-1]]
    lines += [f"| {s.at_s:g} | {s.rss_mib:.1f} |" for s in dict.fromkeys(shown)]
    lines += [
        "",
        f"- machine: {m.cpu_model}, {m.cores} cores; {m.platform}; python {m.python}",
        f"- date: {m.date}; 1-minute load average {m.load_1m[0]} at the start,"
        f" {m.load_1m[1]} at the end",
        f"- `quarry serve` as in `bench.predict_http` (quarry-batching, every module on), {where};"
        f" wrk -t1 -c{report.connections}{wrk_where}; {report.warmup_s:g} s warm-up, then"
        f" {report.duration_s:g} s with RSS (`VmRSS`) sampled every {report.interval_s:g} s",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
