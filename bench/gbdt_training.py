"""Tree-ensemble training through Quarry against the libraries used directly, and GBDT serving.

``python -m bench.gbdt_training`` starts a real ``quarry serve`` on embedded defaults and, for
each built-in tree trainer (XGBoost, LightGBM, random forest; classifier and regressor), submits
a job over HTTP on ``--rows`` generated rows (``sklearn.datasets.make_classification`` /
``make_regression``, ``--columns`` columns, ``--trees`` trees, early stopping off so both sides
fit every tree) and times it from submission to its registered version. The baseline, in the
same run: the library itself fitting the same training split with the same settings, as many
threads as the job's training process gets and at its priority (nice 19), in a process of this
benchmark's. The difference is the platform's overhead: the upload, the dataset's preparation,
the training process's start, the ONNX export and parity check, evaluation, the reference
profile and registration.

Then ``wrk`` posts one-row predictions to two of the trained GBDT versions and, as the baseline,
to the MLP of ``bench.predict_http`` (``bench._mlp``) on the same server. Results go to
``bench/results/gbdt_training.json`` and ``.md``; see ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import msgspec
import numpy as np

from app.modules.training.child import NICENESS
from app.modules.training.dataset import split_rows
from app.modules.training.process import thread_budget
from bench._mlp import request_body, write_model
from bench._report import Machine, machine, save
from bench._wrk import Load, lua_script, run_wrk
from bench.serving_during_training import _serve
from contracts.training import Split

__all__ = ["TRAINERS", "main"]

RESULTS = Path(__file__).with_name("results")
TRAINERS = (
    "xgboost_classifier",
    "xgboost_regressor",
    "lightgbm_classifier",
    "lightgbm_regressor",
    "random_forest_classifier",
    "random_forest_regressor",
)
SERVED = ("xgboost_classifier", "lightgbm_regressor")
"""The trained versions whose predictions are measured over HTTP."""
_LIBRARIES = ("xgboost", "lightgbm", "scikit-learn", "onnxmltools", "skl2onnx", "onnxruntime")


class Training(msgspec.Struct, frozen=True, kw_only=True):
    """One trainer: the job through Quarry against the library fitting the same split."""

    trainer: str
    status: str
    error: str | None
    rows: int
    columns: int
    trees: int
    platform_s: float
    """From the job's submission (its rows uploaded) to its version registered, as a client
    sees it."""
    job_s: float
    """From the job's creation to its outcome, as the server recorded them."""
    direct_s: float
    """The library fitting the training split itself (validation loss each round included)."""
    overhead_s: float
    """``platform_s - direct_s``."""
    platform_metric: float | None
    direct_metric: float
    metric: str
    """Validation ``accuracy`` (classifiers) or ``rmse`` (regressors) of both models."""
    artifact_mib: float | None
    """The registered ONNX model's size."""


class Serving(msgspec.Struct, frozen=True, kw_only=True):
    """One served model under ``wrk``: one row a request."""

    model: str
    load: Load


class Report(msgspec.Struct, frozen=True, kw_only=True):
    machine: Machine
    threads: int
    """Threads the job's training process and the direct fit each get."""
    versions: dict[str, str]
    training: list[Training]
    serving: list[Serving]
    serving_duration_s: float


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: train, measure serving, print the table and write the results."""
    args = _parser().parse_args(argv)
    if args.quick:
        args.rows, args.trees, args.duration, args.connections = 2000, 20, 1.0, [1]
    load_at_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="quarry-bench-gbdt-") as tmp:
        folder = Path(tmp)
        unlimited = {"QUARRY_RATE_LIMIT_PER_S": "1000000"}  # else wrk meets 429s
        with _serve(folder, write_model(folder / "mlp.onnx"), unlimited) as (client, _pid):
            with _direct_process() as pool:
                training = [_train(client, name, args, pool) for name in TRAINERS]
            serving = _serving(client.base_url, folder, args, training)
    report = Report(
        machine=machine(load_at_start),
        threads=thread_budget(1),
        versions=_versions(),
        training=training,
        serving=serving,
        serving_duration_s=args.duration,
    )
    text = markdown(report)
    json_path, md_path = save(report, args.output_dir, "gbdt_training", text)
    print(text)
    print(f"written: {json_path}, {md_path}", file=sys.stderr)
    return 0 if all(t.status == "succeeded" for t in training) else 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.gbdt_training")
    parser.add_argument("--rows", type=int, default=20_000, help="rows each job trains on")
    parser.add_argument("--columns", type=int, default=16, help="input columns")
    parser.add_argument("--trees", type=int, default=200, help="trees (boosting rounds)")
    parser.add_argument("--duration", type=float, default=10, help="seconds of each wrk run")
    parser.add_argument(
        "--connections", type=int, nargs="+", default=[1, 16], help="wrk concurrencies"
    )
    parser.add_argument(
        "--quick", action="store_true", help="2,000 rows, 20 trees, 1 s of wrk at concurrency 1"
    )
    parser.add_argument("--output-dir", type=Path, default=RESULTS, help="where results go")
    return parser


# --- training -------------------------------------------------------------------------------


def _dataset(trainer: str, rows: int, columns: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import (  # type: ignore[import-untyped]
        make_classification,
        make_regression,
    )

    if trainer.endswith("classifier"):
        x, y = make_classification(
            n_samples=rows, n_features=columns, n_informative=columns // 2, random_state=0
        )
        return x.astype(np.float32), y.astype(np.int64)
    x, y = make_regression(
        n_samples=rows, n_features=columns, n_informative=columns // 2, noise=10, random_state=0
    )
    return x.astype(np.float32), y.astype(np.float32)


FOREST_DEPTH = 12
"""Forests grow to this depth: fully grown trees on 20,000 rows hold ~16,000 leaves each."""


def _hyperparameters(trainer: str, trees: int) -> dict[str, Any]:
    if trainer.startswith("random_forest"):
        return {"n_estimators": trees, "max_depth": FOREST_DEPTH}
    return {"n_estimators": trees, "early_stopping_rounds": 0}


def _train(
    client: httpx.Client, trainer: str, args: argparse.Namespace, pool: ProcessPoolExecutor
) -> Training:
    x, y = _dataset(trainer, args.rows, args.columns)
    names = [f"f{j}" for j in range(args.columns)]
    label: Callable[[Any], Any] = int if trainer.endswith("classifier") else float
    data = [
        dict(zip(names, map(float, row), strict=True)) | {"y": label(target)}
        for row, target in zip(x, y, strict=True)
    ]
    model = trainer.replace("_", "-")
    spec = {
        "trainer": trainer,
        "model": model,
        "dataset": {"rows": data, "features": names, "label": "y"},
        "hyperparameters": _hyperparameters(trainer, args.trees),
        "device": "cpu",
    }
    started = time.monotonic()
    answer = client.post("/v1/training/jobs", json=spec)
    answer.raise_for_status()
    job = _outcome(client, str(answer.json()["id"]), model)
    platform_s = time.monotonic() - started
    train, valid = split_rows(len(x), Split())
    direct = pool.submit(_direct, trainer, x[train], y[train], x[valid], y[valid], args.trees)
    direct_s, direct_metric = direct.result()
    metric = "accuracy" if trainer.endswith("classifier") else "rmse"
    created = _seconds(job["created_at"])
    size = None
    if job.get("version") is not None:
        version = client.get(f"/v1/registry/models/{model}/versions/{job['version']}").json()
        size = round(version["size"] / 2**20, 2)
    print(
        f"{trainer:<25} {job['status']:<9} quarry {platform_s:6.2f} s"
        f"  direct {direct_s:6.2f} s  overhead {platform_s - direct_s:6.2f} s",
        file=sys.stderr,
    )
    return Training(
        trainer=trainer,
        status=job["status"],
        error=job.get("error"),
        rows=args.rows,
        columns=args.columns,
        trees=args.trees,
        platform_s=round(platform_s, 2),
        job_s=round(_seconds(job["updated_at"]) - created, 2),
        direct_s=round(direct_s, 2),
        overhead_s=round(platform_s - direct_s, 2),
        platform_metric=job.get("metrics", {}).get(metric),
        direct_metric=round(direct_metric, 4),
        metric=metric,
        artifact_mib=size,
    )


def _outcome(client: httpx.Client, job_id: str, model: str) -> dict[str, Any]:
    """The job once its version is registered or it ended otherwise. The model's versions are
    polled (a small answer); the job itself, whose answer holds every row (encoding it costs the
    server CPU the training process would get), every 30 s only."""
    deadline = time.monotonic() + 1800
    checked = time.monotonic()
    while time.monotonic() < deadline:
        versions = client.get(f"/v1/registry/models/{model}/versions")
        ended = versions.status_code == 200 and bool(versions.json()["items"])
        if ended or time.monotonic() - checked > 30:
            job: dict[str, Any] = client.get(f"/v1/training/jobs/{job_id}").json()
            checked = time.monotonic()
            if job["status"] not in ("queued", "running"):
                return job
        time.sleep(0.05)
    raise TimeoutError(f"training job {job_id} did not end within 30 minutes")


def _direct_process() -> ProcessPoolExecutor:
    """The process the libraries fit in directly: at the training process's priority (nice 19),
    so that other work on the machine weighs on both sides alike, with the libraries imported."""
    context = multiprocessing.get_context("spawn")
    return ProcessPoolExecutor(max_workers=1, mp_context=context, initializer=_lower_priority)


def _lower_priority() -> None:
    os.nice(NICENESS)
    import lightgbm  # noqa: F401
    import sklearn.ensemble  # type: ignore[import-untyped]  # noqa: F401
    import xgboost  # noqa: F401


def _direct(
    trainer: str,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_valid: np.ndarray,
    y_valid: np.ndarray,
    trees: int,
) -> tuple[float, float]:
    """Seconds the library takes to fit the split itself, and the model's validation metric."""
    threads = thread_budget(1)
    classifier = trainer.endswith("classifier")
    started = time.perf_counter()
    if trainer.startswith("xgboost"):
        import xgboost as xgb

        params = {
            "objective": "binary:logistic" if classifier else "reg:squarederror",
            "eval_metric": "logloss" if classifier else "rmse",
            "tree_method": "hist", "eta": 0.1, "max_depth": 6, "seed": 0, "nthread": threads,
        }  # fmt: skip
        valid = xgb.DMatrix(x_valid, label=y_valid, nthread=threads)
        booster = xgb.train(
            params, xgb.DMatrix(x_train, label=y_train, nthread=threads), trees,
            evals=[(valid, "valid")], verbose_eval=False,
        )  # fmt: skip
        seconds = time.perf_counter() - started
        out = booster.inplace_predict(x_valid)
    elif trainer.startswith("lightgbm"):
        import lightgbm as lgb

        params = {
            "objective": "binary" if classifier else "regression",
            "metric": "binary_logloss" if classifier else "rmse",
            "learning_rate": 0.1, "num_leaves": 31, "seed": 0, "deterministic": True,
            "force_row_wise": True, "num_threads": threads, "verbosity": -1,
        }  # fmt: skip
        train_set = lgb.Dataset(x_train, label=y_train)
        gbm = lgb.train(
            params, train_set, trees,
            valid_sets=[lgb.Dataset(x_valid, label=y_valid, reference=train_set)],
        )  # fmt: skip
        seconds = time.perf_counter() - started
        out = gbm.predict(x_valid)
    else:
        from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

        forest = (RandomForestClassifier if classifier else RandomForestRegressor)(
            n_estimators=trees,
            max_features="sqrt" if classifier else 1.0,
            max_depth=FOREST_DEPTH,
            random_state=0,
            n_jobs=threads,
        )
        forest.fit(x_train, y_train)
        seconds = time.perf_counter() - started
        out = forest.predict_proba(x_valid)[:, 1] if classifier else forest.predict(x_valid)
    if classifier:
        return seconds, float(((np.asarray(out) > 0.5) == y_valid).mean())
    return seconds, float(np.sqrt(np.mean((np.asarray(out) - y_valid) ** 2)))


def _seconds(stamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(stamp).timestamp()


# --- serving --------------------------------------------------------------------------------


def _serving(
    base: httpx.URL, folder: Path, args: argparse.Namespace, training: list[Training]
) -> list[Serving]:
    if shutil.which("wrk") is None:
        print("wrk is missing (apt-get install -y wrk): serving not measured", file=sys.stderr)
        return []
    trained = {t.trainer for t in training if t.status == "succeeded"}
    x, _ = _dataset("xgboost_classifier", 1, args.columns)
    row = json.dumps({"inputs": {"features": x.tolist()}})
    targets = [(name.replace("_", "-"), row) for name in SERVED if name in trained]
    targets.append(("mlp", request_body()))
    found = []
    for model, body in targets:
        url = f"{str(base).rstrip('/')}/v1/predict/{model}"
        httpx.post(
            url, content=body, headers={"Content-Type": "application/json"}
        ).raise_for_status()
        script = lua_script(folder / f"{model}.lua", body, {})
        for connections in args.connections:
            run_wrk(
                url, script, connections=connections, duration_s=min(args.duration, 2), cpu=None
            )
            load = run_wrk(url, script, connections=connections, duration_s=args.duration, cpu=None)
            print(
                f"{model:<20} c={connections:<3} {load.requests_per_s:9.1f} req/s"
                f"  p50 {load.p50_ms:7.2f} ms  p99 {load.p99_ms:7.2f} ms  non-2xx {load.non_2xx}",
                file=sys.stderr,
            )
            found.append(Serving(model=model, load=load))
    return found


def _versions() -> dict[str, str]:
    from importlib import metadata

    found = {}
    for name in _LIBRARIES:
        for dist in (name, f"{name}-cpu", f"{name}-gpu"):
            try:
                found[name] = metadata.version(dist)
                break
            except metadata.PackageNotFoundError:
                continue
    return found


# --- report ---------------------------------------------------------------------------------


def markdown(report: Report) -> str:
    """The report as markdown: training against the libraries, then serving."""
    first = report.training[0] if report.training else None
    lines = [
        "# Tree ensembles: training through Quarry vs the library, and GBDT serving",
        "",
        f"{first.rows if first else 0:,} rows x {first.columns if first else 0} columns,"
        f" {first.trees if first else 0} trees (no early stopping; forests {FOREST_DEPTH} deep),"
        f" {report.threads} thread(s) for the job's training process and for the direct fit.",
        "",
        "| trainer | status | Quarry (s) | job on the server (s) | library directly (s)"
        " | overhead (s) | ONNX (MiB) | metric | Quarry | direct |",
        "|---|---|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for t in report.training:
        lines.append(
            f"| {t.trainer} | {t.status} | {t.platform_s} | {t.job_s} | {t.direct_s}"
            f" | {t.overhead_s} | {t.artifact_mib} | {t.metric} | {_round(t.platform_metric)}"
            f" | {t.direct_metric} |"
        )
    lines += [
        "",
        "Quarry: from posting the job (its rows inline) to its version registered. The overhead"
        " is the upload, the training process's start, the ONNX export with its parity check,"
        " evaluation, the reference profile and registration.",
        "",
        f"## Serving: one row a request, {report.serving_duration_s:g} s per run (wrk)",
        "",
        "| model | connections | requests/s | p50 (ms) | p99 (ms) | non-2xx |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for s in report.serving:
        lines.append(
            f"| {s.model} | {s.load.connections} | {s.load.requests_per_s} | {s.load.p50_ms}"
            f" | {s.load.p99_ms} | {s.load.non_2xx + s.load.socket_errors} |"
        )
    m = report.machine
    lines += [
        "",
        "`mlp` is the baseline: `bench._mlp`'s 32->256->256->2 MLP on the same server.",
        "",
        f"Machine: {m.cpu_model}, {m.cores} cores, Python {m.python}, {m.date};"
        f" load {m.load_1m[0]} -> {m.load_1m[1]}.",
        "Libraries: " + ", ".join(f"{k} {v}" for k, v in sorted(report.versions.items())) + ".",
        "",
    ]
    return "\n".join(lines)


def _round(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


if __name__ == "__main__":
    sys.exit(main())
