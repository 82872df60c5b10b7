"""The inference serving goals, each with the figure its benchmark reached.

``python -m bench.summary`` reads the JSON results of ``bench.predict_http``,
``bench.predict_inprocess``, ``bench.batching``, ``bench.oip_binary`` and ``bench.soak`` from
``bench/results/`` and writes ``bench/results/inference.md``: one row per goal, the figure, met or
missed, and what limits it. It measures nothing itself; run the benchmarks first.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec

__all__ = ["main"]

RESULTS = Path(__file__).with_name("results")
FILES = ("predict_http", "predict_inprocess", "batching", "oip_binary", "soak")

LIMITS = {
    "http": (
        "Per request Quarry runs granian (HTTP parsed on a Rust thread; uvicorn once the workers"
        " fill every core) + litestar routing, the"
        " request middleware (call context, server span, HTTP metrics), auth with the rate limit"
        " and the route's scope, idempotency, litestar's exception handling, the contract-call"
        " wrapper (span + histogram), the prediction record and, for a model run over 100 µs,"
        " a hop to the model's runner thread (shorter batches run on the event loop); the async"
        " FastAPI baseline runs the model on the event loop with none of these. At defaults"
        " with auth on (`serving_baselines.md`: one worker, medians of three alternating"
        " rounds) Quarry answered 1.33x FastAPI's requests at one row, c=64 (1.14-1.81x in"
        " three runs before) at 125 vs 242 µs of server CPU per request, p99 17 vs 21 ms, and"
        " 1.14x at 64 rows (1.04x and 0.85x with every batch on a runner thread); two workers"
        " 1.46x one (1.65x at 64 rows): one worker keeps ~1.15 of the two cores busy, two"
        " ~1.65 with wrk on the rest. See"
        " `rpc_overhead_profile.md` and the commits that cut the server's CPU per request."
    ),
    "inprocess": (
        "A version measured under 100 µs a run runs on the caller's thread, without the hop"
        " to a runner thread and back that was most of it (109 µs added before); a CPU model"
        " measured under 50 µs a row at load gets one intra-op thread (no sleeping pool to wake;"
        " it now runs as fast as the baseline's spinning session, on less CPU); the call"
        " wrapper arms a deadline's timer only once a call suspends. What is left, timed step"
        " by step (p50, loaded 2-core VM): the call wrapper ~6 µs (the in-process request check,"
        " to_builtins + convert, ~3.5); the service ~20 µs (input views and the signature check"
        " ~3, output tensors and the Prediction ~2.5, ids ~1, the batcher's bookkeeping ~3-6,"
        " the prediction record ~1); and the prediction records' storage: monitoring writes"
        " them on a worker thread, which preempts the caller on the one pinned core. Records"
        " now go in whole batches of 500 under load (the flusher had drained the buffer after"
        " every write, a dozen records a batch, each with a thread hop and a transaction) and"
        " SQLite takes 100 rows an INSERT: their CPU per call fell from 40-60 µs to 20-35."
        " The run stored adds 15.0 µs at p50 (raw session.run 7.1 µs); four runs of the"
        " previous version on a slower machine gave 24.5-27.6 µs in three, 31.1 and 44.0 in"
        " the one where raw session.run itself was 45 % slower (28 to 46 µs before)."
    ),
    "batching": (
        "One ONNX Runtime run of 64 rows costs much less than 64 runs of one row (the weights are"
        " read once), so batching multiplies throughput until the HTTP path itself (~1 ms of"
        " server CPU per request on this VM) is the bottleneck, so a lighter model gains less."
        " At concurrency 1 there is nothing to batch and the batcher adds"
        " no wait (`max_queue_delay_ms` 0). ONNX Runtime's intra-op pool (one thread per core)"
        " spins on the one CPU the server is pinned to: a 1.2 ms row costs ~4 ms of server CPU"
        " at concurrency 1."
    ),
    "oip": (
        "JSON spends its time turning 32,000 floats into text and back on both sides (the server"
        " parses and writes ~660 KB per request); binary moves 128 KB of raw bytes that become a"
        " numpy array without a copy."
    ),
    "soak": (
        "Every buffer is bounded: the batching queue in rows, prediction records (10,000 at most,"
        " dropped and counted beyond), the idempotency store, the rate limiter's buckets, the"
        " metric series."
    ),
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: read the results and write ``inference.md``."""
    parser = argparse.ArgumentParser(prog="python -m bench.summary", description=__doc__)
    parser.add_argument("--results", type=Path, default=RESULTS, help="where the results are")
    args = parser.parse_args(argv)
    found = {}
    for name in FILES:
        path = args.results / f"{name}.json"
        if not path.exists():
            print(f"missing {path}: run python -m bench.{name} first", file=sys.stderr)
            return 2
        found[name] = msgspec.json.decode(path.read_bytes())
    text = markdown(found)
    (args.results / "inference.md").write_text(text)
    print(text)
    return 0


def _verdict(met: bool) -> str:
    return "**met**" if met else "**missed**"


def markdown(r: dict[str, Any]) -> str:
    """The summary page."""
    http, inproc, batching, oip, soak = (r[name] for name in FILES)
    runs = {(run["server"], run["load"]["connections"]): run for run in http["runs"]}
    best = {
        c: max(
            (runs[(s, c)] for s in ("fastapi-sync", "fastapi-async")),
            key=lambda run: run["load"]["requests_per_s"],
        )
        for c in (1, 64)
    }
    lines = [
        "# Inference serving: goals and what was reached",
        "",
        "Every figure comes from a results file written by a benchmark run on the same 2-core VM"
        " (AMD EPYC, shared with other work: see each file's load average). Regenerate with"
        " `python -m bench.summary` after running the benchmarks.",
        "",
        "| goal | figure reached | verdict | results |",
        "|---|---|---|---|",
    ]
    for c in (64,):
        b = best[c]
        for name in ("quarry-batching", "quarry-no-batching"):
            q = runs[(name, c)]
            ratio = q["load"]["requests_per_s"] / b["load"]["requests_per_s"]
            met = ratio >= 1.5 and q["load"]["p99_ms"] <= b["load"]["p99_ms"]
            lines.append(
                f"| HTTP predict at c={c}, auth + routing + metrics + prediction records on, ≥ 1.5x"
                f" the faster FastAPI baseline with a p99 no worse ({name}) | {ratio:.2f}x"
                f" ({q['load']['requests_per_s']:,.0f} vs {b['server']}"
                f" {b['load']['requests_per_s']:,.0f} req/s); p99 {q['load']['p99_ms']:.1f} vs"
                f" {b['load']['p99_ms']:.1f} ms; server CPU {q['server_cpu_us_per_request']:.0f}"
                f" vs {b['server_cpu_us_per_request']:.0f} µs/request | {_verdict(met)}"
                " | [predict_http.md](predict_http.md) |"
            )
    for row in inproc["rows"]:
        added = row["added_p50_us"]
        lines.append(
            f"| in-process predict adds ≤ 30 µs p50 over raw `session.run` ({row['mode']})"
            f" | +{added:.1f} µs (raw {row['raw']['p50_us']:.1f} µs, in-process"
            f" {row['inprocess']['p50_us']:.1f} µs) | {_verdict(added <= 30)}"
            " | [predict_inprocess.md](predict_inprocess.md) |"
        )
    ratio = batching["throughput_ratio_c64"]
    lines += [
        f"| batching on a ~1 ms/row model at c=64: ≥ 3x the throughput of batching off"
        f" | {ratio:.2f}x (one row: {batching['single_row_ms']} ms) | {_verdict(ratio >= 3)}"
        " | [batching.md](batching.md) |",
        f"| batching at c=1 adds no measurable latency | p50 {batching['added_p50_ms_c1']:+.3f} ms,"
        f" p99 {batching['added_p99_ms_c1']:+.3f} ms (on minus off) |"
        f" {_verdict(abs(batching['added_p50_ms_c1']) < 0.1 * _c1_p50(batching))}"
        " | [batching.md](batching.md) |",
        f"| OIP binary vs JSON, 1000x32 FP32, identity model: ≥ 5x throughput"
        f" | {oip['throughput_ratio']:.2f}x | {_verdict(oip['throughput_ratio'] >= 5)}"
        " | [oip_binary.md](oip_binary.md) |",
        f"| server RSS flat (< 5 % growth after warm-up) over {soak['duration_s']:g} s at"
        f" c={soak['connections']} | {soak['growth']:+.2%} ({soak['rss_after_warmup_mib']} →"
        f" {soak['rss_end_mib']} MiB, max {soak['rss_max_mib']})"
        f" | {_verdict(soak['growth'] < 0.05)}"
        " | [soak.md](soak.md) |",
        "",
        "## One run, same machine: every server at concurrency 1 and 64",
        "",
        "From two runs on the same machine within minutes of each other: `predict_http.json` (every"
        " HTTP server) and `predict_inprocess.json` (sequential calls, i.e. concurrency 1; its raw"
        " and in-process blocks alternate within the run):",
        "",
        "| what | concurrency | req/s | p50 (ms) | p99 (ms) | server CPU/request (µs) |",
        "|---|--:|--:|--:|--:|--:|",
    ]
    for row in inproc["rows"]:
        for side in ("raw", "inprocess"):
            s = row[side]
            what = (
                "raw `session.run`" if side == "raw" else f"`app.connect()` predict, {row['mode']}"
            )
            if side == "raw" and row["mode"] != "batching":
                continue
            lines.append(
                f"| {what} | 1 | {s['calls_per_s']:,.0f} | {s['p50_us'] / 1000:.3f}"
                f" | {s['p99_us'] / 1000:.3f} | {s['cpu_us']:.0f} |"
            )
    for run in sorted(http["runs"], key=lambda run: run["load"]["connections"]):
        load = run["load"]
        lines.append(
            f"| HTTP {run['server']} | {load['connections']} | {load['requests_per_s']:,.0f}"
            f" | {load['p50_ms']:.2f} | {load['p99_ms']:.2f}"
            f" | {run['server_cpu_us_per_request']:.0f} |"
        )
    lines += [
        "",
        "## What limits each figure",
        "",
        f"- **HTTP vs FastAPI.** {LIMITS['http']}",
        f"- **In-process overhead.** {LIMITS['inprocess']}",
        f"- **Batching.** {LIMITS['batching']}",
        f"- **OIP binary.** {LIMITS['oip']}",
        f"- **Memory.** {LIMITS['soak']}",
        "",
        "Load average at the start and end of each run: "
        + "; ".join(
            f"{name} {r[name]['machine']['load_1m'][0]} → {r[name]['machine']['load_1m'][1]}"
            for name in FILES
        )
        + ".",
        "",
    ]
    return "\n".join(lines)


def _c1_p50(batching: dict[str, Any]) -> float:
    off = [
        run["load"]["p50_ms"]
        for run in batching["runs"]
        if run["server"] == "quarry-no-batching" and run["load"]["connections"] == 1
    ]
    return off[0] if off else 1.0


if __name__ == "__main__":
    sys.exit(main())
