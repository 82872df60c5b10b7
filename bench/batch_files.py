"""How fast a batch job scores a Parquet file into a Parquet file.

``python -m bench.batch_files [--quick]`` writes one Parquet file (200,000 rows: an id and the
32 float features of the ``bench/_mlp.py`` MLP) and measures, in this process:

1. **the floor**: pyarrow reading the file in chunks, ONNX Runtime running each chunk and pyarrow
   writing the ids and outputs to a Parquet file: the same work with nothing of Quarry around it;
2. a batch job whose ``source`` is the file and whose ``output`` is a Parquet file, from the
   submission until it has succeeded, on embedded defaults;
3. **the baseline**: the same rows as a batch job on inline tensors (the way before sources),
   from the submission (the tensors already built) until its results are fetched.

Each is run ``--rounds`` times, taking turns; the report gives the fastest round of each (the
machine is shared: the slower rounds measure the neighbours).

Results go to ``bench/results/batch_files.json`` and ``.md``. See ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import onnxruntime as ort
import pyarrow as pa
import pyarrow.parquet as pq
import uvloop

from app.bootstrap import Platform
from app.kernel.settings import Settings
from bench._mlp import FEATURES, write_model
from bench._report import Machine, machine, save
from contracts.common import Tensor
from contracts.features import FeatureSource
from contracts.inference import (
    BatchJob,
    BatchOutput,
    BatchSource,
    FetchBatchResults,
    GetBatchJob,
    SubmitBatchJob,
)
from contracts.registry import RegisterVersion

__all__ = ["main"]

RESULTS = Path(__file__).with_name("results")
_QUICK = {"rows": 20_000, "rounds": 1}
_LIBRARIES = ("pyarrow", "onnxruntime", "msgspec", "sqlalchemy")


class Row(msgspec.Struct, frozen=True, kw_only=True):
    """One way of scoring the file's rows."""

    method: str
    rows: int
    seconds: float
    rows_per_s: float
    vs_floor: float
    """``rows_per_s`` as a share of the floor's."""


class Report(msgspec.Struct, frozen=True, kw_only=True):
    """Everything one run measured."""

    machine: Machine
    setup: dict[str, Any]
    rows: list[Row]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: measure, print the report and write the results."""
    args = _parser().parse_args(argv)
    if args.quick:
        vars(args).update(_QUICK)
    load_at_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="quarry-bench-") as tmp:
        root = Path(tmp) / "data"
        root.mkdir()
        model = write_model(Path(tmp) / "mlp.onnx")
        table = _write_file(root / "rows.parquet", args.rows)
        measured = uvloop.run(_platform(args, root, model.read_bytes(), table))
    floor = measured[0]
    rows = measured
    rows = [msgspec.structs.replace(r, vs_floor=r.rows_per_s / floor.rows_per_s) for r in rows]
    found = machine(load_at_start, _LIBRARIES, absent="-")
    setup = {k: v for k, v in vars(args).items() if k != "output_dir"}
    report = Report(
        machine=found,
        setup={**setup, "features": FEATURES},
        rows=rows,
    )
    text = markdown(report)
    save(report, args.output_dir, "batch_files", text)
    print(text)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.batch_files",
        description="A batch job scoring a Parquet file, against the bare work and inline inputs.",
    )
    parser.add_argument("--rows", type=int, default=200_000, help="rows in the file")
    parser.add_argument("--chunk-rows", type=int, default=4096, help="rows per chunk")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each method")
    parser.add_argument("--quick", action="store_true", help=f"a smaller run: {_QUICK}")
    parser.add_argument("--output-dir", type=Path, default=RESULTS, help="where results go")
    return parser


def _write_file(path: Path, rows: int) -> pa.Table:
    rng = np.random.default_rng(7)
    columns: dict[str, Any] = {"id": np.arange(rows, dtype=np.int64)}
    values = rng.normal(size=(rows, FEATURES)).astype(np.float32)
    for j in range(FEATURES):
        columns[f"f{j}"] = values[:, j]
    table = pa.table(columns)
    pq.write_table(table, path, row_group_size=50_000)
    return table


def _names() -> list[str]:
    return [f"f{j}" for j in range(FEATURES)]


def _floor(session: ort.InferenceSession, root: Path, chunk_rows: int) -> float:
    """Seconds to read, score and write the file with nothing of Quarry around."""
    started = time.perf_counter()
    writer = None
    for batch in pq.ParquetFile(root / "rows.parquet").iter_batches(batch_size=chunk_rows):
        x = np.column_stack([batch.column(n).to_numpy() for n in _names()])
        (y,) = session.run(["y"], {"x": x})
        out = pa.table({"id": batch.column("id"), "y_0": y[:, 0], "y_1": y[:, 1]})
        if writer is None:
            writer = pq.ParquetWriter(root / "floor.parquet", out.schema)
        writer.write_table(out)
    if writer is not None:
        writer.close()
    return time.perf_counter() - started


async def _platform(
    args: argparse.Namespace, root: Path, artifact: bytes, table: pa.Table
) -> list[Row]:
    session = ort.InferenceSession(artifact, providers=["CPUExecutionProvider"])
    session.run(["y"], {"x": np.zeros((1, FEATURES), np.float32)})  # warm, as serving is
    platform = Platform(Settings(data_dir=root, log_level="WARNING"))
    await platform.start()
    try:
        registry = platform.client("registry", caller="bench")
        await registry.register_version(RegisterVersion(name="mlp", artifact=artifact))
        inference = platform.client("inference", caller="bench")
        x = np.column_stack([table.column(n).to_numpy() for n in _names()])
        timings: dict[str, list[float]] = {"floor": [], "file": [], "inline": []}
        for _ in range(args.rounds):
            timings["floor"].append(_floor(session, root, args.chunk_rows))
            timings["file"].append(await _file_job(inference, root, args))
            timings["inline"].append(await _inline_job(inference, x, args))
    finally:
        await platform.stop()
    methods = {
        "floor": "pyarrow + ONNX Runtime + pyarrow (floor)",
        "file": "batch job: Parquet file -> Parquet file",
        "inline": "batch job: inline tensors -> fetched results (baseline)",
    }
    return [
        Row(
            method=methods[key],
            rows=args.rows,
            seconds=min(seconds),
            rows_per_s=args.rows / min(seconds),
            vs_floor=0.0,
        )
        for key, seconds in timings.items()
    ]


async def _file_job(inference: Any, root: Path, args: argparse.Namespace) -> float:
    source = BatchSource(
        source=FeatureSource(format="parquet", path="rows.parquet"),
        inputs={"x": _names()},
        keys=["id"],
    )
    started = time.perf_counter()
    job = await inference.submit_batch_job(
        SubmitBatchJob(
            model="mlp:1",
            inputs={},
            source=source,
            output=BatchOutput(path="scores.parquet", overwrite=True),
            chunk_rows=args.chunk_rows,
        )
    )
    job = await _finished(inference, job)
    seconds = time.perf_counter() - started
    written = pq.read_metadata(root / "scores.parquet").num_rows
    if job.status != "succeeded" or written != args.rows:
        raise RuntimeError(f"the batch job on the file failed: {job.error}")
    return seconds


async def _inline_job(inference: Any, x: np.ndarray[Any, Any], args: argparse.Namespace) -> float:
    started = time.perf_counter()
    job = await inference.submit_batch_job(
        SubmitBatchJob(
            model="mlp:1", inputs={"x": Tensor.from_numpy(x)}, chunk_rows=args.chunk_rows
        )
    )
    job = await _finished(inference, job)
    fetched = 0
    async for chunk in inference.fetch_batch_results(FetchBatchResults(id=job.id)):
        fetched += chunk.outputs["y"].shape[0]
    seconds = time.perf_counter() - started
    if job.status != "succeeded" or fetched != args.rows:
        raise RuntimeError(f"the inline batch job failed: {job.error}")
    return seconds


async def _finished(inference: Any, job: BatchJob) -> BatchJob:
    while job.status in ("queued", "running"):
        await asyncio.sleep(0.05)
        job = await inference.get_batch_job(GetBatchJob(id=job.id))
    return job


def markdown(report: Report) -> str:
    """The report as a markdown table and the machine it ran on."""
    setup = report.setup
    lines = [
        "# Batch scoring from a Parquet file",
        "",
        f"{setup['rows']:,} rows of {setup['features']} float features scored by the"
        f" `bench/_mlp.py` MLP, {setup['chunk_rows']:,} rows a chunk; the fastest of"
        f" {setup['rounds']} rounds of each.",
        "",
        "| method | rows | seconds | rows/s | share of the floor |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in report.rows:
        lines.append(
            f"| {row.method} | {row.rows:,} | {row.seconds:.2f} | {row.rows_per_s:,.0f}"
            f" | {row.vs_floor:.3f} |"
        )
    found = report.machine
    lines += [
        "",
        f"Machine: {found.cpu_model}, {found.cores} cores, Python {found.python},"
        f" {found.platform}; load {found.load_1m[0]} -> {found.load_1m[1]}; {found.date}.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
