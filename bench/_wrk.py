"""Load from ``wrk`` (a separate process): a Lua script that posts one JSON body, and its output
parsed into requests/s and latency percentiles."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import msgspec

__all__ = ["Load", "lua_file_script", "lua_script", "parse_wrk", "run_wrk", "wrk_command"]

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}


class Load(msgspec.Struct, frozen=True, kw_only=True):
    """One wrk run: ``requests`` answered in ``duration_s``, latency percentiles in ms, and the
    answers that were not 2xx/3xx plus socket errors (both should be 0)."""

    connections: int
    requests: int
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int


def lua_script(path: Path, body: str, headers: dict[str, str]) -> Path:
    """Write a wrk script that POSTs ``body`` with ``headers`` (and a JSON content type)."""
    lines = ['wrk.method = "POST"', f"wrk.body = {json.dumps(body)}"]
    for name, value in {"Content-Type": "application/json", **headers}.items():
        lines.append(f"wrk.headers[{json.dumps(name)}] = {json.dumps(value)}")
    path.write_text("\n".join(lines) + "\n")
    return path


def lua_file_script(path: Path, body_file: Path, headers: dict[str, str]) -> Path:
    """Write a wrk script that POSTs the bytes of ``body_file`` (binary or large) with
    ``headers`` (the content type included)."""
    lines = [
        'wrk.method = "POST"',
        f'local f = assert(io.open({json.dumps(str(body_file))}, "rb"))',
        'wrk.body = f:read("*a")',
        "f:close()",
    ]
    for name, value in headers.items():
        lines.append(f"wrk.headers[{json.dumps(name)}] = {json.dumps(value)}")
    path.write_text("\n".join(lines) + "\n")
    return path


def wrk_command(url: str, script: Path, *, connections: int, duration_s: float) -> list[str]:
    """The ``wrk`` command line: one thread, ``connections``, latency percentiles."""
    command = ["wrk", "-t1", f"-c{connections}", f"-d{duration_s:g}s", "--latency"]
    return [*command, "-s", str(script), url]


def run_wrk(
    url: str, script: Path, *, connections: int, duration_s: float, cpu: int | None
) -> Load:
    """Run ``wrk`` with one thread against ``url`` (pinned to ``cpu`` with taskset) and parse it."""
    command = wrk_command(url, script, connections=connections, duration_s=duration_s)
    if cpu is not None:
        command = ["taskset", "-c", str(cpu), *command]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return parse_wrk(out, connections)


def parse_wrk(out: str, connections: int) -> Load:
    """A :class:`Load` from ``wrk --latency`` output."""
    return Load(
        connections=connections,
        requests=int(_find(r"(\d+) requests in", out)),
        requests_per_s=round(float(_find(r"Requests/sec:\s+([\d.]+)", out)), 1),
        p50_ms=_latency("50%", out),
        p99_ms=_latency("99%", out),
        non_2xx=int(_find(r"Non-2xx or 3xx responses: (\d+)", out, "0")),
        socket_errors=sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out)),
    )


def _find(pattern: str, text: str, default: str | None = None) -> str:
    match = re.search(pattern, text)
    if match is None:
        if default is None:
            raise ValueError(f"wrk output lacks {pattern!r}:\n{text}")
        return default
    return match.group(1)


def _latency(percentile: str, text: str) -> float:
    match = re.search(rf"^\s*{percentile}\s+([\d.]+)(us|ms|s|m)\s*$", text, re.MULTILINE)
    if match is None:
        raise ValueError(f"wrk output lacks the {percentile} latency:\n{text}")
    return round(float(match.group(1)) * _UNITS[match.group(2)], 3)
