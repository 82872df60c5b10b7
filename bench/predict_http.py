"""HTTP prediction throughput and latency: Quarry against hand-written FastAPI servers.

``python -m bench.predict_http`` serves one ONNX model (``bench._mlp``: a 32->256->256->2 MLP)
from four servers, one at a time, each pinned to one CPU: the FastAPI baselines in
``bench/baselines/`` (a sync and an async endpoint, uvicorn with uvloop and httptools) and the real
``quarry serve`` (auth on, 1 % trace sampling) with batching at its defaults and with batching off
(``QUARRY_MAX_BATCH_SIZE=1``). ``wrk`` on another CPU posts the same JSON body at each
concurrency. Results go to ``bench/results/predict_http.json`` and ``.md``; see
``bench/README.md``.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx
import msgspec

from bench._mlp import LAYERS, request_body, write_model
from bench._report import Machine, machine, save
from bench._timing import can_pin, process_cpu_ns
from bench._wrk import Load, lua_script, run_wrk

__all__ = ["QUARRY_ENV", "SAMPLING", "main", "rss_mib", "server"]

RESULTS = Path(__file__).with_name("results")
BASELINES = ("fastapi-sync", "fastapi-async")
QUARRY = {"quarry-batching": {}, "quarry-no-batching": {"QUARRY_MAX_BATCH_SIZE": "1"}}
GOAL_RATIO = 1.5
"""The goal: at concurrency 64, Quarry answers at least 1.5x the requests/s of the faster FastAPI
baseline, with a p99 no worse."""
GOAL_CONNECTIONS = 64
SAMPLING = {
    "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
    "OTEL_TRACES_SAMPLER_ARG": "0.01",
    "QUARRY_LOG_LEVEL": "WARNING",
}
QUARRY_ENV = {"QUARRY_AUTH": "on", "QUARRY_RATE_LIMIT_PER_S": "1000000"}
"""Auth on; the per-key rate limit still checked on every request, set high enough that it never
refuses the load generator (its default, 1000/s per key, would)."""


class Run(msgspec.Struct, frozen=True, kw_only=True):
    """One server at one concurrency: the load, the server's RSS (MiB) before and after it, and
    the server's CPU time per answered request (µs)."""

    server: str
    load: Load
    rss_start_mib: float | None
    rss_end_mib: float | None
    server_cpu_us_per_request: float | None


class Report(msgspec.Struct, frozen=True, kw_only=True):
    machine: Machine
    duration_s: float
    warmup_s: float
    rows_per_request: int
    body_bytes: int
    model: str
    wrk_cpu: int | None
    server_cpu: int | None
    versions: dict[str, str]
    runs: list[Run]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: measure every server, print the table and write the results."""
    args = _parser().parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is missing: apt-get install -y wrk", file=sys.stderr)
        return 2
    load_at_start = os.getloadavg()[0]
    server_cpu = args.server_cpu if can_pin(args.server_cpu) else None
    wrk_cpu = args.wrk_cpu if can_pin(args.wrk_cpu) else None
    body = request_body(args.rows)
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="quarry-bench-http-") as tmp:
        folder = Path(tmp)
        model = write_model(folder / "mlp.onnx")
        for name in (*BASELINES, *QUARRY):
            with server(name, folder, model, server_cpu, args.port) as (url, pid, headers):
                script = lua_script(folder / f"{name}.lua", body, headers)
                for connections in args.connections:
                    runs.append(_measure(name, url, pid, script, connections, args, wrk_cpu))
    report = Report(
        machine=machine(load_at_start),
        duration_s=args.duration,
        warmup_s=args.warmup,
        rows_per_request=args.rows,
        body_bytes=len(body),
        model="MLP " + "->".join(map(str, LAYERS)) + " FP32, onnx.helper, random weights",
        wrk_cpu=wrk_cpu,
        server_cpu=server_cpu,
        versions=_versions(),
        runs=runs,
    )
    text = markdown(report)
    json_path, md_path = save(report, args.output_dir, "predict_http", text)
    print(text)
    print(f"written: {json_path}, {md_path}", file=sys.stderr)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.predict_http",
        description="HTTP predict throughput: Quarry vs hand-written FastAPI servers.",
    )
    parser.add_argument("--duration", type=float, default=15, help="seconds of each timed run")
    parser.add_argument("--warmup", type=float, default=3, help="untimed seconds before each")
    parser.add_argument(
        "--connections", type=int, nargs="+", default=[1, 64], help="wrk concurrencies"
    )
    parser.add_argument("--rows", type=int, default=1, help="rows of x per request")
    parser.add_argument("--wrk-cpu", type=int, default=0, help="CPU wrk is pinned to")
    parser.add_argument("--server-cpu", type=int, default=1, help="CPU the servers are pinned to")
    parser.add_argument("--port", type=int, default=0, help="server port (0: a free one)")
    parser.add_argument("--output-dir", type=Path, default=RESULTS, help="where results go")
    return parser


def _measure(
    name: str,
    url: str,
    pid: int,
    script: Path,
    connections: int,
    args: argparse.Namespace,
    cpu: int | None,
) -> Run:
    if args.warmup > 0:
        run_wrk(url, script, connections=connections, duration_s=args.warmup, cpu=cpu)
    rss_start, cpu_start = rss_mib(pid), process_cpu_ns(pid)
    load = run_wrk(url, script, connections=connections, duration_s=args.duration, cpu=cpu)
    rss_end, cpu_end = rss_mib(pid), process_cpu_ns(pid)
    cpu_us = None
    if cpu_start is not None and cpu_end is not None and load.requests:
        cpu_us = round((cpu_end - cpu_start) / load.requests / 1000, 1)
    print(
        f"{name:<19} c={connections:<3} {load.requests_per_s:9.1f} req/s"
        f"  p50 {load.p50_ms:7.2f} ms  p99 {load.p99_ms:7.2f} ms  non-2xx {load.non_2xx}",
        file=sys.stderr,
    )
    return Run(
        server=name,
        load=load,
        rss_start_mib=rss_start,
        rss_end_mib=rss_end,
        server_cpu_us_per_request=cpu_us,
    )


@contextmanager
def server(
    name: str,
    folder: Path,
    model: Path,
    cpu: int | None,
    port: int,
    extra_env: dict[str, str] | None = None,
    *,
    sampling: dict[str, str] = SAMPLING,
) -> Iterator[tuple[str, int, dict[str, str]]]:
    """Start server ``name`` (a baseline, or Quarry with ``QUARRY[name]`` and ``extra_env``);
    yield its predict URL, its pid and the headers requests need. The model is ``mlp`` v1.
    ``sampling`` is the tracing and logging environment of every server (``OTEL_*`` variables
    of this process are left out)."""
    extra_env = extra_env or {}
    port = port or _free_port()
    base = f"http://127.0.0.1:{port}"
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env = {**inherited, **sampling, "BENCH_MODEL": str(model)}
    headers: dict[str, str] = {}
    if name in BASELINES:
        module = "bench.baselines." + name.replace("-", "_")
        command = [sys.executable, "-m", "uvicorn", f"{module}:app", "--port", str(port)]
        command += ["--loop", "uvloop", "--http", "httptools", "--workers", "1"]
        command += ["--no-access-log", "--log-level", "warning"]
        url, ready = f"{base}/predict", f"{base}/docs"
    else:
        data = folder / name
        env |= {"QUARRY_DATA_DIR": str(data), **QUARRY_ENV, **QUARRY.get(name, {}), **extra_env}
        quarry = str(Path(sys.executable).with_name("quarry"))
        setup_key = _create_key(quarry, env, "train,read", "bench-setup")
        headers["Authorization"] = "Bearer " + _create_key(quarry, env, "predict", "bench")
        command = [quarry, "serve", "--port", str(port)]
        url, ready = f"{base}/v1/predict/mlp", f"{base}/healthz"
    if cpu is not None:
        command = ["taskset", "-c", str(cpu), *command]
    log = (folder / f"{name}.log").open("wb")
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_ready(ready, process, folder / f"{name}.log")
        if name not in BASELINES:
            _register(base, model, setup_key)
        answer = httpx.post(url, content=request_body(), headers=headers | _JSON, timeout=30)
        answer.raise_for_status()
        assert "outputs" in answer.json(), answer.text
        yield url, process.pid, headers
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


_JSON = {"Content-Type": "application/json"}


def _create_key(quarry: str, env: dict[str, str], scopes: str, name: str) -> str:
    out = subprocess.run(
        [quarry, "keys", "create", "--scopes", scopes, "--name", name],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return out.strip().splitlines()[-1]


def _register(base: str, model: Path, key: str) -> None:
    """Register the model over HTTP as ``mlp`` version 1 and load it before traffic comes."""
    auth = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=base, headers=auth, timeout=60) as client:
        files = {"file": ("mlp.onnx", model.read_bytes(), "application/octet-stream")}
        client.post("/v1/registry/models/mlp/versions", files=files).raise_for_status()
        client.post("/v1/inference/models/mlp/load").raise_for_status()


def _wait_ready(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"server not ready after 60 s:\n{log.read_text()}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mib(pid: int) -> float | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    return round(int(match.group(1)) / 1024, 1) if match else None


def _versions() -> dict[str, str]:
    import importlib.metadata

    names = ("fastapi", "pydantic", "uvicorn", "litestar", "onnxruntime", "onnx")
    found = {d.metadata["Name"].lower(): d.version for d in importlib.metadata.distributions()}
    return {n: found.get(n) or found.get(f"{n}-gpu") or "absent" for n in names}


def markdown(report: Report) -> str:
    """The report as markdown: the table, the verdict against the goal, the setup."""
    return "\n".join(
        [
            "# HTTP predict: Quarry vs hand-written FastAPI",
            "",
            *_table(report),
            "",
            *_verdict(report),
            "",
            *_about(report),
            "",
        ]
    )


def _best_baseline(report: Report, connections: int) -> Run:
    runs = [r for r in report.runs if r.server in BASELINES and r.load.connections == connections]
    return max(runs, key=lambda r: r.load.requests_per_s)


def _table(report: Report) -> list[str]:
    lines = [
        "| server | concurrency | requests | req/s | p50 (ms) | p99 (ms) | non-2xx"
        " | RSS start → end (MiB) | server CPU/request (µs) | req/s vs best FastAPI |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for run in sorted(report.runs, key=lambda r: r.load.connections):
        load, best = run.load, _best_baseline(report, run.load.connections)
        cpu = (
            "" if run.server_cpu_us_per_request is None else f"{run.server_cpu_us_per_request:.0f}"
        )
        lines.append(
            f"| {run.server} | {load.connections} | {load.requests:,} | {load.requests_per_s:,.0f}"
            f" | {load.p50_ms:.2f} | {load.p99_ms:.2f} | {load.non_2xx + load.socket_errors}"
            f" | {run.rss_start_mib} → {run.rss_end_mib} | {cpu}"
            f" | {load.requests_per_s / best.load.requests_per_s:.2f}x |"
        )
    return lines


def _verdict(report: Report) -> list[str]:
    if not any(r.load.connections == GOAL_CONNECTIONS for r in report.runs):
        return [f"(no run at concurrency {GOAL_CONNECTIONS}: no verdict)"]
    best = _best_baseline(report, GOAL_CONNECTIONS)
    lines = [
        f"**Goal** (at concurrency {GOAL_CONNECTIONS}, at least {GOAL_RATIO}x the requests/s of"
        f" the faster FastAPI baseline, with a p99 no worse): the faster baseline is"
        f" {best.server}, {best.load.requests_per_s:,.0f} req/s, p99 {best.load.p99_ms:.2f} ms.",
        "",
    ]
    for run in report.runs:
        if run.server in QUARRY and run.load.connections == GOAL_CONNECTIONS:
            ratio = run.load.requests_per_s / best.load.requests_per_s
            met = ratio >= GOAL_RATIO and run.load.p99_ms <= best.load.p99_ms
            errors = run.load.non_2xx + run.load.socket_errors
            lines.append(
                f"- {run.server}: **{ratio:.2f}x** req/s, p99 {run.load.p99_ms:.2f} ms"
                f" ({run.load.p99_ms / best.load.p99_ms:.2f}x the baseline's)"
                + (f", {errors} failed" if errors else "")
                + f": **{'met' if met else 'missed'}**"
            )
    return lines


def _about(report: Report) -> list[str]:
    m = report.machine
    versions = ", ".join(f"{k} {v}" for k, v in report.versions.items())
    return [
        f"- machine: {m.cpu_model}, {m.cores} cores; {m.platform}; python {m.python}",
        f"- {versions}",
        f"- date: {m.date}; 1-minute load average {m.load_1m[0]} at the start,"
        f" {m.load_1m[1]} at the end",
        f"- model: {report.model}; body: {report.rows_per_request} row(s),"
        f" {report.body_bytes} bytes of JSON",
        f"- wrk -t1 pinned to CPU {report.wrk_cpu}, each server to CPU {report.server_cpu};"
        f" {report.warmup_s:g} s untimed then {report.duration_s:g} s timed per concurrency",
        "- quarry: `quarry serve`, QUARRY_AUTH=on with a predict-scope key, OTEL_TRACES_SAMPLER="
        "parentbased_traceidratio (ARG 0.01), QUARRY_LOG_LEVEL=WARNING; baselines: uvicorn, one"
        " worker, uvloop + httptools, no access log",
    ]


if __name__ == "__main__":
    sys.exit(main())
