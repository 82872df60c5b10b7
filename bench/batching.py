"""Adaptive batching on a model where compute dominates: Quarry HTTP with batching on and off.

``python -m bench.batching`` serves a wide MLP (``bench._mlp``, 32->W->W->W->2 with ``--width``
2048: one row costs about 1 ms of ONNX Runtime on the 2-core VM) from ``quarry serve`` as
``bench.predict_http`` starts it, with batching at its defaults and with
``QUARRY_MAX_BATCH_SIZE=1``, and loads it with ``wrk`` at concurrency 1 and 64. Goals: at
concurrency 64 batching gives at least 3x the throughput of batching off; at concurrency 1 it
adds no measurable latency. Results go to ``bench/results/batching.json`` and ``.md``.
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

from bench._mlp import FEATURES, request_body, write_model
from bench._report import Machine, machine, save
from bench._timing import can_pin, process_cpu_ns
from bench._wrk import Load, lua_script, run_wrk
from bench.predict_http import QUARRY, rss_mib, server

__all__ = ["main"]

RESULTS = Path(__file__).with_name("results")
GOAL_RATIO = 3.0


class Run(msgspec.Struct, frozen=True, kw_only=True):
    server: str
    load: Load
    server_cpu_us_per_request: float | None
    rss_end_mib: float | None


class Report(msgspec.Struct, frozen=True, kw_only=True):
    machine: Machine
    model: str
    single_row_ms: float
    duration_s: float
    warmup_s: float
    runs: list[Run]
    throughput_ratio_c64: float
    added_p50_ms_c1: float
    added_p99_ms_c1: float


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: both servers at both concurrencies; write the results."""
    args = _parser().parse_args(argv)
    if args.quick:
        args.duration, args.warmup = 5.0, 2.0
    if shutil.which("wrk") is None:
        print("wrk is missing: apt-get install -y wrk", file=sys.stderr)
        return 2
    load_at_start = os.getloadavg()[0]
    server_cpu = 1 if can_pin(1) else None
    wrk_cpu = 0 if can_pin(0) else None
    layers = (FEATURES, args.width, args.width, args.width, 2)
    runs = []
    with tempfile.TemporaryDirectory(prefix="quarry-bench-batching-") as tmp:
        folder = Path(tmp)
        model = write_model(folder / "wide.onnx", layers=layers)
        single = _single_row_ms(model)
        for name in QUARRY:
            with server(name, folder, model, server_cpu, 0) as (url, pid, headers):
                script = lua_script(folder / f"{name}.lua", request_body(), headers)
                for connections in (1, 64):
                    run_wrk(
                        url, script, connections=connections, duration_s=args.warmup, cpu=wrk_cpu
                    )
                    cpu_start = process_cpu_ns(pid)
                    load = run_wrk(
                        url, script, connections=connections, duration_s=args.duration, cpu=wrk_cpu
                    )
                    cpu_end = process_cpu_ns(pid)
                    cpu_us = None
                    if cpu_start is not None and cpu_end is not None and load.requests:
                        cpu_us = round((cpu_end - cpu_start) / load.requests / 1000, 1)
                    runs.append(
                        Run(
                            server=name,
                            load=load,
                            server_cpu_us_per_request=cpu_us,
                            rss_end_mib=rss_mib(pid),
                        )
                    )
                    print(f"{name} c={connections}: {load.requests_per_s} req/s", file=sys.stderr)
    on = {r.load.connections: r.load for r in runs if r.server == "quarry-batching"}
    off = {r.load.connections: r.load for r in runs if r.server == "quarry-no-batching"}
    report = Report(
        machine=machine(load_at_start),
        model="MLP " + "->".join(map(str, layers)) + " FP32, onnx.helper, random weights",
        single_row_ms=single,
        duration_s=args.duration,
        warmup_s=args.warmup,
        runs=runs,
        throughput_ratio_c64=round(on[64].requests_per_s / off[64].requests_per_s, 2),
        added_p50_ms_c1=round(on[1].p50_ms - off[1].p50_ms, 3),
        added_p99_ms_c1=round(on[1].p99_ms - off[1].p99_ms, 3),
    )
    text = markdown(report)
    save(report, args.output_dir, "batching", text)
    print(text)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.batching", description=__doc__)
    parser.add_argument("--duration", type=float, default=15, help="seconds of each timed run")
    parser.add_argument("--warmup", type=float, default=3, help="untimed seconds before each")
    parser.add_argument("--width", type=int, default=2048, help="hidden layer width")
    parser.add_argument("--quick", action="store_true", help="5 s runs after 2 s of warm-up")
    parser.add_argument("--output-dir", type=Path, default=RESULTS, help="where results go")
    return parser


def _single_row_ms(model: Path) -> float:
    """What one row costs ONNX Runtime on one thread here (median of 50 runs), in ms."""
    import time

    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    x = np.ones((1, FEATURES), dtype=np.float32)
    times = []
    for _ in range(60):
        started = time.perf_counter()
        session.run(None, {"x": x})
        times.append(time.perf_counter() - started)
    return round(float(np.median(times[10:])) * 1000, 3)


def markdown(report: Report) -> str:
    """The report as markdown: the table, the verdicts, the setup."""
    lines = [
        "# Batching on a compute-bound model: Quarry HTTP, batching on vs off",
        "",
        "| server | concurrency | requests | req/s | p50 (ms) | p99 (ms) | failed"
        " | server CPU/request (µs) |",
        "|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for run in sorted(report.runs, key=lambda r: r.load.connections):
        load = run.load
        lines.append(
            f"| {run.server} | {load.connections} | {load.requests:,} | {load.requests_per_s:,.0f}"
            f" | {load.p50_ms:.2f} | {load.p99_ms:.2f} | {load.non_2xx + load.socket_errors}"
            f" | {run.server_cpu_us_per_request} |"
        )
    ratio_met = report.throughput_ratio_c64 >= GOAL_RATIO
    lines += [
        "",
        f"- **Goal** (at concurrency 64, batching gives at least {GOAL_RATIO:g}x the throughput of"
        f" batching off): **{report.throughput_ratio_c64:.2f}x**:"
        f" **{'met' if ratio_met else 'missed'}**",
        f"- **Goal** (at concurrency 1, batching adds no measurable latency): p50"
        f" {report.added_p50_ms_c1:+.3f} ms, p99 {report.added_p99_ms_c1:+.3f} ms (batching on"
        " minus off; the runs differ by this much from one run to the next)",
        "",
    ]
    m = report.machine
    lines += [
        f"- machine: {m.cpu_model}, {m.cores} cores; {m.platform}; python {m.python}",
        f"- date: {m.date}; 1-minute load average {m.load_1m[0]} at the start,"
        f" {m.load_1m[1]} at the end",
        f"- model: {report.model}; one row costs {report.single_row_ms} ms of ONNX Runtime on one"
        " thread (median of 50 runs here); body: one row of JSON",
        f"- `quarry serve` as in `bench.predict_http` (auth on, 1 % trace sampling), pinned to"
        f" CPU 1; wrk -t1 pinned to CPU 0; {report.warmup_s:g} s untimed then"
        f" {report.duration_s:g} s timed per concurrency; batching at its defaults vs"
        " QUARRY_MAX_BATCH_SIZE=1",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
