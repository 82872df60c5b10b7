"""Open Inference Protocol v2: the binary tensor extension against JSON, for a large input.

``python -m bench.oip_binary`` serves an ``Identity`` model (FP32 [batch, 32]) from
``quarry serve`` as ``bench.predict_http`` starts it and posts ``POST /v2/models/mlp/infer`` with
a 1000x32 FP32 input from ``wrk`` at concurrency 64: once as JSON (``"data"``, flat), once with
the binary extension (a JSON header, ``Inference-Header-Content-Length``, the raw bytes, and the
output asked for as binary). Goal: binary gives at least 5x the throughput of JSON. Results go to
``bench/results/oip_binary.json`` and ``.md``. The model's queue holds two requests per connection
(``QUARRY_MAX_QUEUE_ROWS``; the default, 4096 rows, holds four of these requests).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import httpx
import msgspec
import numpy as np

from bench._mlp import FEATURES, write_identity
from bench._report import Machine, machine, save
from bench._timing import can_pin, process_cpu_ns
from bench._wrk import Load, lua_file_script, run_wrk
from bench.predict_http import server

__all__ = ["main"]

RESULTS = Path(__file__).with_name("results")
GOAL_RATIO = 5.0
ROWS = 1000
HEADER = "Inference-Header-Content-Length"


class Run(msgspec.Struct, frozen=True, kw_only=True):
    encoding: str
    body_bytes: int
    load: Load
    server_cpu_us_per_request: float | None


class Report(msgspec.Struct, frozen=True, kw_only=True):
    machine: Machine
    shape: tuple[int, int]
    duration_s: float
    warmup_s: float
    runs: list[Run]
    throughput_ratio: float


def bodies(x: np.ndarray) -> dict[str, tuple[bytes, dict[str, str]]]:
    """The JSON and the binary request for ``x``, each with its headers."""
    tensor = {"name": "x", "shape": list(x.shape), "datatype": "FP32"}
    as_json = json.dumps({"inputs": [{**tensor, "data": x.reshape(-1).tolist()}]}).encode()
    header = json.dumps(
        {
            "inputs": [{**tensor, "parameters": {"binary_data_size": x.nbytes}}],
            "outputs": [{"name": "y", "parameters": {"binary_data": True}}],
        }
    ).encode()
    return {
        "json": (as_json, {"Content-Type": "application/json"}),
        "binary": (
            header + x.tobytes(),
            {"Content-Type": "application/octet-stream", HEADER: str(len(header))},
        ),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: both encodings against one server; write the results."""
    args = _parser().parse_args(argv)
    if args.quick:
        args.duration, args.warmup = 5.0, 2.0
    if shutil.which("wrk") is None:
        print("wrk is missing: apt-get install -y wrk", file=sys.stderr)
        return 2
    load_at_start = os.getloadavg()[0]
    server_cpu = 1 if can_pin(1) else None
    wrk_cpu = 0 if can_pin(0) else None
    x = np.random.default_rng(0).standard_normal((ROWS, FEATURES)).astype(np.float32)
    runs = []
    with tempfile.TemporaryDirectory(prefix="quarry-bench-oip-") as tmp:
        folder = Path(tmp)
        model = write_identity(folder / "identity.onnx")
        queue = {"QUARRY_MAX_QUEUE_ROWS": str(2 * args.connections * ROWS)}
        with server("quarry-batching", folder, model, server_cpu, 0, queue) as (url, pid, auth):
            infer = url.replace("/v1/predict/mlp", "/v2/models/mlp/infer")
            for encoding, (body, headers) in bodies(x).items():
                _check(infer, body, headers | auth, encoding, x)
                (folder / f"{encoding}.body").write_bytes(body)
                script = lua_file_script(
                    folder / f"{encoding}.lua", folder / f"{encoding}.body", headers | auth
                )
                run_wrk(
                    infer, script, connections=args.connections, duration_s=args.warmup, cpu=wrk_cpu
                )
                cpu_start = process_cpu_ns(pid)
                load = run_wrk(
                    infer,
                    script,
                    connections=args.connections,
                    duration_s=args.duration,
                    cpu=wrk_cpu,
                )
                cpu_end = process_cpu_ns(pid)
                cpu_us = None
                if cpu_start is not None and cpu_end is not None and load.requests:
                    cpu_us = round((cpu_end - cpu_start) / load.requests / 1000, 1)
                runs.append(
                    Run(
                        encoding=encoding,
                        body_bytes=len(body),
                        load=load,
                        server_cpu_us_per_request=cpu_us,
                    )
                )
                print(f"{encoding}: {load.requests_per_s} req/s", file=sys.stderr)
    by = {r.encoding: r.load for r in runs}
    report = Report(
        machine=machine(load_at_start),
        shape=(ROWS, FEATURES),
        duration_s=args.duration,
        warmup_s=args.warmup,
        runs=runs,
        throughput_ratio=round(by["binary"].requests_per_s / by["json"].requests_per_s, 2),
    )
    text = markdown(report, args.connections)
    save(report, args.output_dir, "oip_binary", text)
    print(text)
    return 0


def _check(url: str, body: bytes, headers: dict[str, str], encoding: str, x: np.ndarray) -> None:
    """One request first: the answer must be the input (the model is the identity). Requests
    the previous run left queued may still be running: wait for them."""
    answer = httpx.post(url, content=body, headers=headers, timeout=60)
    answer.raise_for_status()
    if encoding == "binary":
        split = int(answer.headers[HEADER])
        assert answer.content[split:] == x.tobytes(), "binary answer differs from the input"
    else:
        data = answer.json()["outputs"][0]["data"]
        assert np.allclose(np.asarray(data, dtype=np.float32).reshape(x.shape), x)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.oip_binary", description=__doc__)
    parser.add_argument("--duration", type=float, default=15, help="seconds of each timed run")
    parser.add_argument("--warmup", type=float, default=3, help="untimed seconds before each")
    parser.add_argument("--connections", type=int, default=64, help="wrk concurrency")
    parser.add_argument("--quick", action="store_true", help="5 s runs after 2 s of warm-up")
    parser.add_argument("--output-dir", type=Path, default=RESULTS, help="where results go")
    return parser


def markdown(report: Report, connections: int) -> str:
    """The report as markdown: the table, the verdict, the setup."""
    lines = [
        "# OIP v2 infer: binary tensor extension vs JSON",
        "",
        "| encoding | body bytes | requests | req/s | p50 (ms) | p99 (ms) | failed"
        " | server CPU/request (µs) |",
        "|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for run in report.runs:
        load = run.load
        lines.append(
            f"| {run.encoding} | {run.body_bytes:,} | {load.requests:,}"
            f" | {load.requests_per_s:,.0f} | {load.p50_ms:.2f} | {load.p99_ms:.2f}"
            f" | {load.non_2xx + load.socket_errors}"
            f" | {run.server_cpu_us_per_request} |"
        )
    met = report.throughput_ratio >= GOAL_RATIO
    m = report.machine
    rows, cols = report.shape
    lines += [
        "",
        f"**Goal** (binary at least {GOAL_RATIO:g}x the throughput of JSON for a {rows}x{cols}"
        f" FP32 input): **{report.throughput_ratio:.2f}x**: **{'met' if met else 'missed'}**",
        "",
        f"- machine: {m.cpu_model}, {m.cores} cores; {m.platform}; python {m.python}",
        f"- date: {m.date}; 1-minute load average {m.load_1m[0]} at the start,"
        f" {m.load_1m[1]} at the end",
        f"- model: Identity, FP32 [batch, {cols}], registered as `mlp`; input {rows}x{cols};"
        " JSON asks for a JSON answer, binary for a binary output",
        f"- `quarry serve` as in `bench.predict_http` (auth on, 1 % trace sampling, batching at"
        f" its defaults), pinned to CPU 1; wrk -t1 -c{connections} pinned to CPU 0, the body read"
        f" from a file by its Lua script; {report.warmup_s:g} s untimed then"
        f" {report.duration_s:g} s timed per encoding",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
