"""Prediction latency while a training job runs, against the same server idle.

``python -m bench.serving_during_training`` starts a real ``quarry serve`` on embedded defaults
(no ``QUARRY_*`` setting but its data folder; training jobs run in child processes), registers
and loads ``bench._mlp``'s MLP, and sends one prediction at a time at a steady rate
(``--rate``) from this process. It measures the latency of each for ``--idle`` seconds, then
submits a real training job (``mlp_classifier`` on ``--rows`` generated rows, ``--epochs``
epochs) over HTTP and measures while it runs, to its end, then ``--idle`` seconds more; that
``--jobs`` times, one job after another. The goal: p99 during training (every training phase
together) at most 1.5x the idle p99 (every idle phase together). Results go to
``bench/results/serving_during_training.json`` and ``.md``; see ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import msgspec
import numpy as np

from bench._mlp import LAYERS, request_body, write_model
from bench._report import Machine, machine, save
from bench._timing import process_cpu_ns
from bench.predict_http import _free_port, _wait_ready

__all__ = ["GOAL_RATIO", "main"]

RESULTS = Path(__file__).with_name("results")
GOAL_RATIO = 1.5
"""The goal: p99 while a job trains is at most 1.5x the idle p99."""
_JSON = {"Content-Type": "application/json"}


class Phase(msgspec.Struct, frozen=True, kw_only=True):
    """Predictions sent during one phase: latency percentiles (ms) and errors."""

    name: str
    seconds: float
    requests: int
    errors: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    server_cpu_ms_per_s: float | None
    """CPU time of the serving process (not its children) per second of the phase."""


class Job(msgspec.Struct, frozen=True, kw_only=True):
    """A training job: its outcome and how long it took from submission."""

    model: str
    status: str
    error: str | None
    seconds: float
    epochs: int
    rows: int
    columns: int


class Report(msgspec.Struct, frozen=True, kw_only=True):
    machine: Machine
    rate_per_s: float
    model: str
    phases: list[Phase]
    jobs: list[Job]
    idle_p99_ms: float
    """p99 of every idle phase together: the machine's drift during the run weighs on both."""
    training_p99_ms: float
    """p99 of every training phase together."""
    ratio_p99: float
    """p99 during training / idle p99."""
    torch_in_server: bool | None
    """Whether the serving process mapped libtorch (``None`` where /proc is missing)."""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: measure, print the table and write the results."""
    args = _parser().parse_args(argv)
    if args.quick:
        args.idle, args.warmup, args.rows, args.epochs, args.jobs = 3.0, 1.0, 400, 3, 1
    load_at_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="quarry-bench-training-") as tmp:
        folder = Path(tmp)
        with _serve(folder, write_model(folder / "mlp.onnx")) as (client, pid):
            report = _run(client, pid, args, load_at_start)
    text = markdown(report)
    json_path, md_path = save(report, args.output_dir, "serving_during_training", text)
    print(text)
    print(f"written: {json_path}, {md_path}", file=sys.stderr)
    return 0 if all(job.status == "succeeded" for job in report.jobs) else 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.serving_during_training")
    parser.add_argument("--rate", type=float, default=100, help="predictions per second")
    parser.add_argument("--idle", type=float, default=20, help="seconds of each idle phase")
    parser.add_argument("--warmup", type=float, default=3, help="untimed seconds of load first")
    parser.add_argument("--rows", type=int, default=20_000, help="rows the job trains on")
    parser.add_argument("--epochs", type=int, default=30, help="epochs the job trains")
    parser.add_argument("--jobs", type=int, default=2, help="training jobs, one after another")
    parser.add_argument("--quick", action="store_true", help="3 s idle, one 400-row 3-epoch job")
    parser.add_argument("--output-dir", type=Path, default=RESULTS, help="where results go")
    return parser


def _run(client: httpx.Client, pid: int, args: argparse.Namespace, load: float) -> Report:
    body = request_body()
    _load(client, body, args.rate, lambda elapsed: elapsed >= args.warmup)
    phases, jobs = [], []
    idle, training = [], []  # every latency of each kind
    for n in range(1, args.jobs + 1):
        phase, latencies = _phase(f"idle {n}", client, pid, body, args.rate, _for(args.idle))
        phases.append(phase)
        idle += latencies
        submitted, model = time.monotonic(), f"trained-{n}"
        job_id = _submit(client, model, args.rows, args.epochs)
        ended = _ended(client, model)
        phase, latencies = _phase(f"training {n}", client, pid, body, args.rate, ended, 0.5)
        phases.append(phase)
        training += latencies
        jobs.append(_job(client, job_id, model, time.monotonic() - submitted, args))
    phase, latencies = _phase("idle after", client, pid, body, args.rate, _for(args.idle))
    phases.append(phase)
    idle += latencies
    idle_p99, training_p99 = _p99(idle), _p99(training)
    return Report(
        machine=machine(load),
        rate_per_s=args.rate,
        model="MLP " + "->".join(map(str, LAYERS)) + " FP32, one row per request",
        phases=phases,
        jobs=jobs,
        idle_p99_ms=idle_p99,
        training_p99_ms=training_p99,
        ratio_p99=round(training_p99 / idle_p99, 2),
        torch_in_server=_maps_torch(pid),
    )


def _for(seconds: float) -> Callable[[float], bool]:
    return lambda elapsed: elapsed >= seconds


def _p99(latencies: list[float]) -> float:
    return round(float(np.percentile(np.asarray(latencies) * 1000, 99)), 2)


def _job(
    client: httpx.Client, job_id: str, model: str, seconds: float, args: argparse.Namespace
) -> Job:
    job = _outcome(client, job_id)
    return Job(
        model=model,
        status=job["status"],
        error=job.get("error"),
        seconds=round(seconds, 1),
        epochs=job.get("epoch", 0),
        rows=args.rows,
        columns=_COLUMNS,
    )


def _ended(client: httpx.Client, model: str) -> Callable[[float], bool]:
    """Whether the job has registered its version or failed, asked with small answers only (a
    job's own answer holds its spec, with every inline row: polling it would load the server)."""

    def ended(_elapsed: float) -> bool:
        versions = client.get(f"/v1/registry/models/{model}/versions")
        if versions.status_code == 200 and versions.json()["items"]:
            return True
        failed = client.get("/v1/training/jobs", params={"status": "failed", "limit": 1})
        return bool(failed.json()["items"])

    return ended


def _outcome(client: httpx.Client, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        job: dict[str, Any] = client.get(f"/v1/training/jobs/{job_id}").json()
        if job["status"] not in ("queued", "running") or time.monotonic() > deadline:
            return job
        time.sleep(0.2)


def _phase(
    name: str,
    client: httpx.Client,
    pid: int,
    body: str,
    rate: float,
    done: Callable[[float], bool],
    poll_s: float = 0.0,
) -> tuple[Phase, list[float]]:
    cpu_start, started = process_cpu_ns(pid), time.monotonic()
    latencies, errors = _load(client, body, rate, done, poll_s)
    seconds = time.monotonic() - started
    cpu_end = process_cpu_ns(pid)
    cpu = None
    if cpu_start is not None and cpu_end is not None:
        cpu = round((cpu_end - cpu_start) / 1e6 / seconds, 1)
    ms = np.asarray(latencies) * 1000 if latencies else np.zeros(1)
    phase = Phase(
        name=name,
        seconds=round(seconds, 1),
        requests=len(latencies),
        errors=errors,
        p50_ms=round(float(np.percentile(ms, 50)), 2),
        p99_ms=round(float(np.percentile(ms, 99)), 2),
        max_ms=round(float(ms.max()), 2),
        server_cpu_ms_per_s=cpu,
    )
    print(
        f"{name:<11} {phase.requests:6d} requests  p50 {phase.p50_ms:6.2f} ms"
        f"  p99 {phase.p99_ms:7.2f} ms  max {phase.max_ms:7.2f} ms",
        file=sys.stderr,
    )
    return phase, latencies


def _load(
    client: httpx.Client,
    body: str,
    rate: float,
    done: Callable[[float], bool],
    poll_s: float = 0.0,
) -> tuple[list[float], int]:
    """Predict at ``rate`` per second until ``done(elapsed)`` (asked every ``poll_s`` seconds,
    between predictions); answer each prediction's latency (s) and the failures."""
    interval, started = 1.0 / rate, time.monotonic()
    latencies: list[float] = []
    errors, next_at, next_poll = 0, started, started
    while True:
        now = time.monotonic()
        if now >= next_poll:
            if done(now - started):
                return latencies, errors
            next_poll = now + poll_s
        if next_at > now:
            time.sleep(next_at - now)
        sent = time.perf_counter()
        answer = client.post("/v1/predict/mlp", content=body, headers=_JSON)
        latencies.append(time.perf_counter() - sent)
        errors += answer.status_code != 200
        next_at = max(next_at + interval, time.monotonic() - interval)


_COLUMNS = 16


def _submit(client: httpx.Client, model: str, rows: int, epochs: int) -> str:
    """Submit ``mlp_classifier`` on generated rows: the label is the sign of a linear score."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, _COLUMNS))
    y = (x @ rng.normal(size=_COLUMNS) > 0).astype(int)
    names = [f"f{j}" for j in range(_COLUMNS)]
    data = [
        dict(zip(names, map(float, row), strict=True)) | {"y": int(label)}
        for row, label in zip(x, y, strict=True)
    ]
    spec = {
        "trainer": "mlp_classifier",
        "model": model,
        "dataset": {"rows": data, "features": names, "label": "y"},
        "hyperparameters": {"epochs": epochs, "patience": 0},
        "device": "cpu",
    }
    answer = client.post("/v1/training/jobs", json=spec)
    answer.raise_for_status()
    return str(answer.json()["id"])


@contextmanager
def _serve(
    folder: Path, model: Path, extra_env: dict[str, str] | None = None
) -> Iterator[tuple[httpx.Client, int]]:
    """``quarry serve`` on embedded defaults (and ``extra_env``) with ``model`` registered and
    loaded as ``mlp``."""
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUARRY_")}
    env |= {"QUARRY_DATA_DIR": str(folder / "data"), "QUARRY_LOG_LEVEL": "WARNING"}
    env |= extra_env or {}
    quarry = str(Path(sys.executable).with_name("quarry"))
    log_path = folder / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [quarry, "serve", "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        _wait_ready(f"{base}/healthz", process, log_path)
        with httpx.Client(base_url=base, timeout=60) as client:
            files = {"file": ("mlp.onnx", model.read_bytes(), "application/octet-stream")}
            client.post("/v1/registry/models/mlp/versions", files=files).raise_for_status()
            client.post("/v1/inference/models/mlp/load").raise_for_status()
            yield client, process.pid
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _maps_torch(pid: int) -> bool | None:
    try:
        return "libtorch" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return None


def markdown(report: Report) -> str:
    """The report as markdown: the phases, the verdict against the goal, the setup."""
    lines = [
        "# Serving while a training job runs",
        "",
        "| phase | seconds | requests | errors | p50 (ms) | p99 (ms) | max (ms)"
        " | server CPU (ms/s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in report.phases:
        lines.append(
            f"| {p.name} | {p.seconds} | {p.requests} | {p.errors} | {p.p50_ms} | {p.p99_ms}"
            f" | {p.max_ms} | {p.server_cpu_ms_per_s} |"
        )
    verdict = "met" if report.ratio_p99 <= GOAL_RATIO else "missed"
    m = report.machine
    lines += [
        "",
        f"p99 during training ({report.training_p99_ms} ms, every training phase) / idle p99"
        f" ({report.idle_p99_ms} ms, every idle phase): **{report.ratio_p99}x** (goal <="
        f" {GOAL_RATIO}x: {verdict}). libtorch mapped into the serving process:"
        f" {report.torch_in_server}.",
        "",
        "| job | rows x features | epochs | outcome | seconds (submission to outcome) |",
        "|---|---:|---:|---|---:|",
        *(
            f"| {j.model} | {j.rows} x {j.columns} | {j.epochs} | {j.status} | {j.seconds} |"
            for j in report.jobs
        ),
        "",
        "Each job is `mlp_classifier` on inline rows; its time includes the training process's"
        " start, the ONNX export, the parity check and the registration.",
        "",
        f"Load: one prediction at a time at {report.rate_per_s:g}/s from the benchmark process"
        f" (httpx, keep-alive), {report.model}; `quarry serve` on embedded defaults, nothing"
        " pinned.",
        "",
        f"Machine: {m.cpu_model}, {m.cores} cores, Python {m.python}, {m.platform};"
        f" load average {m.load_1m[0]} at the start, {m.load_1m[1]} at the end; {m.date}.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
