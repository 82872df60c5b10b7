"""The results of ``bench.rpc_overhead``: the machine, the setup, one row per measurement, written
as JSON and as a markdown table."""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec

from bench._timing import Stats

__all__ = ["GOAL_ADDED_P50_US", "Machine", "Report", "Row", "Setup", "machine", "write"]

GOAL_ADDED_P50_US = 500.0
"""The goal: a remote call adds at most 0.5 ms p50 for a small message on loopback."""

SEED_FIGURE = "network hops add 5-20 ms per service call"
_LIBRARIES = (
    "litestar",
    "granian",
    "uvicorn",
    "uvloop",
    "httptools",
    "httpx",
    "msgspec",
    "opentelemetry-sdk",
)


class Machine(msgspec.Struct, frozen=True, kw_only=True):
    """Where the benchmark ran."""

    cpu_model: str
    cores: int
    python: str
    platform: str
    date: str
    libraries: dict[str, str]
    load_1m: tuple[float, float]
    """The 1-minute load average when the run started and when it ended: on a machine shared with
    other work, latency figures wander with it, CPU time per call much less."""


class Setup(msgspec.Struct, frozen=True, kw_only=True):
    """How it ran."""

    warmup: int
    rounds: int
    calls: dict[str, int]
    payload_bytes: dict[str, int]
    client_cpu: int | None
    server_cpu: int | None
    traces_sampler: str
    traces_sampler_arg: str


class Row(msgspec.Struct, frozen=True, kw_only=True):
    """One payload over one transport; ``added_p50_us`` is its p50 minus the in-process p50 and
    ``server_cpu_us`` the server process's CPU time per call (remote transports only)."""

    payload: str
    transport: str
    stats: Stats
    added_p50_us: float
    server_cpu_us: float | None = None


class Report(msgspec.Struct, frozen=True, kw_only=True):
    """Everything one run measured."""

    machine: Machine
    setup: Setup
    rows: list[Row]

    def added_p50_us(self, payload: str, transport: str) -> float:
        """The added p50 of ``payload`` over ``transport``."""
        return next(
            r.added_p50_us for r in self.rows if (r.payload, r.transport) == (payload, transport)
        )


def machine(
    load_at_start: float, libraries: Sequence[str] = _LIBRARIES, *, absent: str = "absent"
) -> Machine:
    """A description of this machine and interpreter, at the end of a run started under load
    ``load_at_start``, with the installed versions of ``libraries`` (``absent`` for one that is
    not installed)."""
    return Machine(
        cpu_model=_cpu_model(),
        cores=os.cpu_count() or 0,
        python=platform.python_version(),
        platform=platform.platform(),
        date=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        libraries={name: _version(name, absent) for name in libraries},
        load_1m=(round(load_at_start, 2), round(os.getloadavg()[0], 2)),
    )


def write(report: Report, folder: Path, *, name: str, remote: str) -> tuple[Path, Path]:
    """Write ``<name>.json`` and ``<name>.md`` under ``folder`` (created); answer both paths."""
    return save(report, folder, name, markdown(report, remote=remote))


def save(report: Any, folder: Path, name: str, text: str) -> tuple[Path, Path]:
    """Write any benchmark's ``report`` as ``<name>.json`` and its ``text`` as ``<name>.md``
    under ``folder`` (created); answer both paths."""
    folder.mkdir(parents=True, exist_ok=True)
    json_path, md_path = folder / f"{name}.json", folder / f"{name}.md"
    json_path.write_bytes(msgspec.json.format(msgspec.json.encode(report), indent=2) + b"\n")
    md_path.write_text(text)
    return json_path, md_path


def markdown(report: Report, *, remote: str) -> str:
    """The report as markdown: the table, the verdict against the goal, the machine."""
    return "\n".join(
        [
            "# RPC overhead: one contract call, remote vs in-process",
            "",
            *_table(report),
            "",
            *_verdict(report, remote),
            "",
            *_about(report),
            "",
        ]
    )


def _table(report: Report) -> list[str]:
    lines = [
        "| payload | transport | calls | p50 (µs) | p99 (µs) | mean (µs) | calls/s"
        " | added p50 vs in-process (µs) | client CPU/call (µs) | server CPU/call (µs) |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for row in report.rows:
        s = row.stats
        server = "" if row.server_cpu_us is None else f"{row.server_cpu_us:.1f}"
        lines.append(
            f"| {row.payload} | {row.transport} | {s.calls} | {s.p50_us:.1f} | {s.p99_us:.1f}"
            f" | {s.mean_us:.1f} | {s.calls_per_s:,.0f} | {row.added_p50_us:+.1f}"
            f" | {s.cpu_us:.1f} | {server} |"
        )
    return lines


def _verdict(report: Report, remote: str) -> list[str]:
    small = report.added_p50_us("small", remote)
    tensor = report.added_p50_us("tensor", remote)
    met = "met" if small <= GOAL_ADDED_P50_US else "missed"
    return [
        f"**Goal** (remote adds at most {GOAL_ADDED_P50_US:.0f} µs p50 for a small message on"
        f" loopback): {met}, {remote} adds **{small:.0f} µs** p50 for a small message and"
        f" {tensor:.0f} µs for a {report.setup.payload_bytes['tensor']:,}-byte tensor request.",
        "",
        f"Seed figure ({SEED_FIGURE}): over loopback a remote call adds {small / 1000:.2f} ms"
        f" p50 (small) and {tensor / 1000:.2f} ms (tensor); the seed's figure also holds network"
        " distance and the callee's own work, which this benchmark leaves out.",
    ]


def _about(report: Report) -> list[str]:
    m, s = report.machine, report.setup
    libraries = ", ".join(f"{k} {v}" for k, v in m.libraries.items())
    return [
        f"- machine: {m.cpu_model}, {m.cores} cores; {m.platform}",
        f"- python {m.python}; {libraries}",
        f"- date: {m.date}; 1-minute load average {m.load_1m[0]} at the start, {m.load_1m[1]}"
        " at the end",
        f"- client pinned to CPU {s.client_cpu}, server to CPU {s.server_cpu}; {s.warmup} warm-up"
        f" calls per transport and payload, then sequential timed calls in {s.rounds} rounds"
        " that take turns between transports",
        f"- OTEL_TRACES_SAMPLER={s.traces_sampler} (OTEL_TRACES_SAMPLER_ARG={s.traces_sampler_arg})"
        " in both processes",
        f"- payload bytes (msgpack request): {s.payload_bytes}",
    ]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(name: str, absent: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return absent
