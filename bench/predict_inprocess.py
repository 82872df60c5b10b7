"""What in-process prediction adds over ONNX Runtime itself.

``python -m bench.predict_inprocess`` times sequential one-row predictions of the MLP of
``bench._mlp``: raw ``onnxruntime.InferenceSession.run`` (the limit) against
``app.connect()``'s ``q.inference.predict(Predict(...))`` (the embedded platform, defaults, a
temporary data dir), with batching at its defaults and off (``max_batch_size=1``). Blocks of
calls take turns between the two so that load drift touches both. Goal: in-process predict adds
at most 30 µs p50. Results go to ``bench/results/predict_inprocess.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

import app
from bench._mlp import FEATURES, LAYERS, write_model
from bench._report import Machine, machine, save
from bench._timing import Stats, Timer, pin_to_cpu, warm_up
from contracts.common import Tensor
from contracts.inference import Predict
from contracts.registry import RegisterVersion

__all__ = ["main"]

RESULTS = Path(__file__).with_name("results")
GOAL_ADDED_P50_US = 30.0
"""The goal: in-process predict adds at most 30 µs p50 over raw ``session.run``."""
MODES: dict[str, dict[str, Any]] = {
    "batching": {},
    "no-batching": {"inference": {"max_batch_size": 1}},
}


class Row(msgspec.Struct, frozen=True, kw_only=True):
    """One mode: the raw session and the in-process predict, timed in alternating blocks."""

    mode: str
    raw: Stats
    inprocess: Stats
    added_p50_us: float


class Report(msgspec.Struct, frozen=True, kw_only=True):
    machine: Machine
    model: str
    calls: int
    warmup: int
    rounds: int
    cpu: int | None
    rows: list[Row]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: time both, per mode, and write the results."""
    args = _parser().parse_args(argv)
    if args.quick:
        args.calls, args.warmup = 2000, 300
    load_at_start = os.getloadavg()[0]
    cpu = pin_to_cpu(args.cpu)
    os.environ.setdefault("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    os.environ.setdefault("OTEL_TRACES_SAMPLER_ARG", "0.01")
    rows = asyncio.run(_measure(args))
    report = Report(
        machine=machine(load_at_start),
        model="MLP " + "->".join(map(str, LAYERS)) + " FP32, one row",
        calls=args.calls,
        warmup=args.warmup,
        rounds=args.rounds,
        cpu=cpu,
        rows=rows,
    )
    text = markdown(report)
    save(report, args.output_dir, "predict_inprocess", text)
    print(text)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.predict_inprocess", description=__doc__)
    parser.add_argument("--calls", type=int, default=10000, help="timed calls per side and mode")
    parser.add_argument("--warmup", type=int, default=1000, help="untimed calls first")
    parser.add_argument("--rounds", type=int, default=10, help="blocks the calls are split into")
    parser.add_argument("--cpu", type=int, default=1, help="CPU to pin to")
    parser.add_argument("--quick", action="store_true", help="2000 calls, 300 warm-up")
    parser.add_argument("--output-dir", type=Path, default=RESULTS, help="where results go")
    return parser


async def _measure(args: argparse.Namespace) -> list[Row]:
    import onnxruntime as ort

    x = np.random.default_rng(0).standard_normal((1, FEATURES)).astype(np.float32)
    rows = []
    with tempfile.TemporaryDirectory(prefix="quarry-bench-inprocess-") as tmp:
        model = write_model(Path(tmp) / "mlp.onnx")
        options = ort.SessionOptions()
        options.log_severity_level = 4
        session = ort.InferenceSession(
            str(model), sess_options=options, providers=["CPUExecutionProvider"]
        )

        async def raw(feeds: dict[str, Any]) -> Any:
            return session.run(None, feeds)

        for mode, overrides in MODES.items():
            data = Path(tmp) / mode
            async with app.connect(data_dir=data, **overrides) as q:
                await q.registry.register_version(RegisterVersion.from_path("mlp", model))
                request = Predict(model="mlp", inputs={"x": Tensor.from_numpy(x)})
                answer = await q.inference.predict(request)
                assert "y" in answer.outputs, answer
                raw_timer, quarry_timer = Timer(), Timer()
                await warm_up(raw, {"x": x}, args.warmup)
                await warm_up(q.inference.predict, request, args.warmup)
                per_round = max(1, args.calls // args.rounds)
                for _ in range(args.rounds):
                    await raw_timer.run(raw, {"x": x}, per_round)
                    await quarry_timer.run(q.inference.predict, request, per_round)
                raw_stats, quarry_stats = raw_timer.stats(), quarry_timer.stats()
                rows.append(
                    Row(
                        mode=mode,
                        raw=raw_stats,
                        inprocess=quarry_stats,
                        added_p50_us=round(quarry_stats.p50_us - raw_stats.p50_us, 1),
                    )
                )
                print(f"{mode}: added p50 {rows[-1].added_p50_us} µs", file=sys.stderr)
    return rows


def markdown(report: Report) -> str:
    """The report as markdown: the table, the verdict, the setup."""
    lines = [
        "# In-process predict vs raw ONNX Runtime",
        "",
        "| batching | side | calls | p50 (µs) | p99 (µs) | mean (µs) | calls/s | CPU/call (µs)"
        " | added p50 (µs) |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for row in report.rows:
        for side, stats in (("raw session.run", row.raw), ("app.connect() predict", row.inprocess)):
            added = f"{row.added_p50_us:+.1f}" if stats is row.inprocess else ""
            lines.append(
                f"| {row.mode} | {side} | {stats.calls} | {stats.p50_us:.1f} | {stats.p99_us:.1f}"
                f" | {stats.mean_us:.1f} | {stats.calls_per_s:,.0f} | {stats.cpu_us:.1f}"
                f" | {added} |"
            )
    lines.append("")
    for row in report.rows:
        met = row.added_p50_us <= GOAL_ADDED_P50_US
        lines.append(
            f"- **Goal** (adds at most {GOAL_ADDED_P50_US:.0f} µs p50), {row.mode}:"
            f" adds **{row.added_p50_us:.1f} µs**: **{'met' if met else 'missed'}**"
        )
    m = report.machine
    lines += [
        "",
        f"- machine: {m.cpu_model}, {m.cores} cores; {m.platform}; python {m.python}",
        f"- date: {m.date}; 1-minute load average {m.load_1m[0]} at the start,"
        f" {m.load_1m[1]} at the end",
        f"- model: {report.model}; pinned to CPU {report.cpu}; {report.warmup} warm-up calls,"
        f" then {report.calls} timed sequential calls per side in {report.rounds} alternating"
        " blocks; OTEL_TRACES_SAMPLER=parentbased_traceidratio (ARG 0.01); embedded defaults"
        " (`app.connect(data_dir=...)`), prediction records on",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
