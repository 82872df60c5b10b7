"""``quarry quickstart``: the whole loop on embedded defaults, stage by stage.

ingest -> train -> register -> deploy -> traffic -> shift -> drift -> retrain -> rollout -> serve.
The data set is generated (seeded): subscribers of a product, whose churn depends on their
tenure, spend, support tickets, plan and last login. Ingest writes it to a Parquet file in the
data directory and materializes the views whose source it is, as a team with an export would;
the shift pushes its rows through the API, as a live system would. The shift makes support
tickets climb and spend fall for every subscriber, and churn follow. Each stage prints
``[stage] <name>``, what happened and how long it took; ``--no-serve`` exits after the rollout
(status 0 only when every stage succeeded), otherwise the API keeps serving with ready-to-paste
commands printed.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from app.bootstrap import Platform, configure, create_app
from app.kernel.settings import Settings, http_server_for
from contracts.features import (
    Feature,
    FeatureSource,
    GetMaterialization,
    Log1p,
    Materialize,
    OneHot,
    PushRows,
    PutFeatureService,
    PutFeatureView,
    Standardize,
)
from contracts.inference import Deployment, Predict, PutDeployment, RolloutPolicy, Route
from contracts.monitoring import GetSummary, RunDriftCheck
from contracts.registry import GetVersion
from contracts.training import (
    Dataset,
    Gate,
    GetTrainingJob,
    ListRetrainings,
    PutRetrainingPolicy,
    RetrainingPolicy,
    SubmitTrainingJob,
    TrainingJobSpec,
)

__all__ = ["STAGES", "run"]

STAGES = (
    "ingest",
    "train",
    "register",
    "deploy",
    "traffic",
    "shift",
    "drift",
    "retrain",
    "rollout",
    "serve",
)
USERS = 2000
MODEL = "churn"
DEPLOYMENT = "churn-live"
FEATURES = [
    "subscribers:tenure_months",
    "subscribers:monthly_spend",
    "subscribers:support_tickets",
    "subscribers:plan",
    "subscribers:days_since_login",
]
SOURCE = "sources/subscribers.parquet"
"""The generated data set, relative to the data directory (the first source root)."""


class StageFailed(Exception):
    """A stage could not do its job; the message says why."""


@dataclass
class Run:
    """What the stages share."""

    q: dict[str, Any]
    out: Any
    rng: np.random.Generator
    flush: Callable[[], Awaitable[None]]
    data_dir: Path
    version: int = 0
    columns: int = 0
    shift_started: float = 0.0
    report_id: str = ""
    retrained: int = 0
    timings: dict[str, float] = field(default_factory=dict)

    def say(self, text: str) -> None:
        print(f"  {text}", file=self.out, flush=True)

    def bar(self, label: str, done: int, total: int, extra: str = "") -> None:
        """A progress bar redrawn in place on a terminal; elsewhere only its last state."""
        tty = getattr(self.out, "isatty", lambda: False)()
        if not tty and done < total:
            return
        width = 30
        filled = int(width * done / max(total, 1))
        start = "\r" if tty else ""
        line = f"{start}  {label} |{'#' * filled}{'.' * (width - filled)}| {done}/{total} {extra}"
        end = "\n" if done >= total else ""
        print(line, end=end, file=self.out, flush=True)


# --- data --------------------------------------------------------------------------------------


def subscribers(
    rng: np.random.Generator, *, shifted: bool
) -> tuple[list[dict[str, Any]], list[int]]:
    """Feature rows and churn labels; ``shifted`` makes tickets climb and spend fall."""
    tenure = rng.gamma(1.5, 8.0, USERS) if shifted else rng.gamma(2.0, 12.0, USERS)
    spend = rng.lognormal(3.4, 0.5, USERS) * (0.6 if shifted else 1.0)
    tickets = rng.poisson(4.0 if shifted else 1.0, USERS)
    plan = rng.choice(["basic", "pro", "enterprise"], USERS, p=[0.55, 0.35, 0.10])
    login = rng.exponential(9.0 if shifted else 6.0, USERS)
    score = (
        -0.05 * tenure
        - 0.02 * spend
        + 0.45 * tickets
        + 0.08 * login
        - 0.6 * (plan == "enterprise")
        + rng.normal(0, 0.8, USERS)
    )
    labels = (score > np.quantile(score, 0.7) if not shifted else score > 0.8).astype(int)
    rows = [
        {
            "user_id": i,
            "tenure_months": round(float(tenure[i]), 2),
            "monthly_spend": round(float(spend[i]), 2),
            "support_tickets": int(tickets[i]),
            "plan": str(plan[i]),
            "days_since_login": round(float(login[i]), 2),
        }
        for i in range(USERS)
    ]
    return rows, [int(v) for v in labels]


async def _push(run: Run, rows: list[dict[str, Any]], labels: list[int], when: datetime) -> None:
    stamp = when.isoformat()
    features = [{**row, "event_timestamp": stamp} for row in rows]
    outcomes = [
        {"user_id": row["user_id"], "churned": label, "event_timestamp": stamp}
        for row, label in zip(rows, labels, strict=True)
    ]
    for start in range(0, USERS, 500):
        await run.q["features"].push(
            PushRows(view="subscribers", rows=features[start : start + 500])
        )
        await run.q["features"].push(PushRows(view="outcomes", rows=outcomes[start : start + 500]))
        run.bar("rows", min(start + 500, USERS) * 2, USERS * 2)


# --- stages ------------------------------------------------------------------------------------


def write_source(path: Path, rows: list[dict[str, Any]], labels: list[int], when: datetime) -> None:
    """The subscribers and their outcomes as one Parquet file, every row stamped ``when``."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:  # pragma: no cover - installed with the training extra
        raise StageFailed("the quickstart needs pyarrow: pip install 'quarryml[sources]'") from None
    table = pa.Table.from_pylist(
        [
            {**row, "churned": label, "event_timestamp": when}
            for row, label in zip(rows, labels, strict=True)
        ]
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


async def _materialize(run: Run, view: str) -> None:
    """Load ``view`` from its source, drawing the run's progress as ``quarry materialize``
    does."""
    from app.cli.materialize import progress_line

    features = run.q["features"]
    job = await features.materialize(Materialize(view=view, chunk_rows=500))  # a few chunks
    tty = getattr(run.out, "isatty", lambda: False)()
    while job.status in ("queued", "running"):
        if tty:
            print(f"\r  {progress_line(job)}", end="", file=run.out, flush=True)
        await asyncio.sleep(0.1)
        job = await features.get_materialization(GetMaterialization(id=job.id))
    print(("\r" if tty else "") + f"  {progress_line(job)}", file=run.out, flush=True)
    if job.status != "succeeded":
        raise StageFailed(f"materializing {view!r} failed: {job.error}")


async def ingest(run: Run) -> None:
    features = run.q["features"]
    rows, labels = subscribers(run.rng, shifted=False)
    write_source(run.data_dir / SOURCE, rows, labels, datetime.now(UTC) - timedelta(days=1))
    run.say(f"{USERS} subscribers and their outcomes written to {SOURCE} (Parquet)")
    await features.put_view(
        PutFeatureView(
            name="subscribers",
            entities=["user_id"],
            features=[
                Feature(name="tenure_months", dtype="float"),
                Feature(name="monthly_spend", dtype="float"),
                Feature(name="support_tickets", dtype="int", default=0),
                Feature(name="plan", dtype="string", default="basic"),
                Feature(name="days_since_login", dtype="float"),
            ],
            description="What we know about each subscriber",
            source=FeatureSource(format="parquet", path=SOURCE),
        )
    )
    await features.put_view(
        PutFeatureView(
            name="outcomes",
            entities=["user_id"],
            features=[Feature(name="churned", dtype="int")],
            description="Whether the subscriber left",
            source=FeatureSource(format="parquet", path=SOURCE),
        )
    )
    await features.put_service(
        PutFeatureService(
            name=MODEL,
            features=FEATURES,
            transforms=[
                Standardize(input="subscribers:tenure_months"),
                Log1p(input="subscribers:monthly_spend"),
                Standardize(input="subscribers:monthly_spend"),
                Standardize(input="subscribers:support_tickets"),
                OneHot(input="subscribers:plan"),
                Standardize(input="subscribers:days_since_login"),
            ],
            description="Churn model inputs",
        )
    )
    run.say("views 'subscribers' and 'outcomes' read it as their source; materialized:")
    for view in ("subscribers", "outcomes"):
        await _materialize(run, view)
    run.say(f"churn rate {np.mean(labels):.1%}; feature service {MODEL!r} with 6 transforms")


def _spec() -> TrainingJobSpec:
    now = datetime.now(UTC).isoformat()
    return TrainingJobSpec(
        trainer="mlp_classifier",
        model=MODEL,
        dataset=Dataset(
            feature_service=MODEL,
            entity_rows=[{"user_id": i, "event_timestamp": now} for i in range(USERS)],
            label="outcomes:churned",
        ),
        hyperparameters={"epochs": 40, "hidden": 32, "patience": 6},
        gate=Gate(metric="accuracy", threshold=0.7, baseline="champion", promote_to="candidate"),
        description="quickstart churn model",
    )


async def _follow(run: Run, job_id: str) -> Any:
    training = run.q["training"]
    while True:
        job = await training.get_job(GetTrainingJob(id=job_id))
        if job.status in ("succeeded", "failed", "cancelled"):
            if job.epochs:
                run.bar("epochs", job.epochs, job.epochs)
            return job
        if job.epochs:
            loss = job.metrics.get("valid_loss")
            run.bar("epochs", job.epoch, job.epochs, f"valid_loss={loss:.4f}" if loss else "")
        await asyncio.sleep(0.2)


async def train(run: Run) -> None:
    job = await run.q["training"].submit_job(SubmitTrainingJob(spec=_spec()))
    run.say(f"job {job.id}: mlp_classifier on {USERS} subscribers, point-in-time")
    done = await _follow(run, job.id)
    if done.status != "succeeded":
        raise StageFailed(f"training job {done.status}: {done.error}")
    run.version = done.version
    m = done.metrics
    run.say(f"accuracy {m['accuracy']:.3f}, AUC {m.get('auc', float('nan')):.3f}, F1 {m['f1']:.3f}")
    verdict = done.verdict
    run.say(f"gate: {'passed' if verdict and verdict.passed else 'failed'} (accuracy >= 0.7)")
    if not verdict or not verdict.passed:
        raise StageFailed("the first model did not pass its gate")


async def register(run: Run) -> None:
    info = await run.q["registry"].get_version(GetVersion(ref=f"{MODEL}:{run.version}"))
    lineage = info.lineage
    run.say(f"{MODEL}:{info.version} sha256 {info.sha256[:12]}..., {info.size} bytes")
    run.say(f"lineage: job {lineage.training_job_id}, service {lineage.feature_service},")
    run.say(
        f"  transform state {lineage.transform_state}, dataset {lineage.dataset_digest[:19]}..."
    )
    run.say(f"reference profile stored: {info.has_reference_profile}")
    run.columns = info.signature.inputs[0].shape[-1]


async def deploy(run: Run) -> None:
    from contracts.registry import SetAlias

    await run.q["registry"].set_alias(SetAlias(name=MODEL, alias="champion", version=run.version))
    await run.q["inference"].put_deployment(
        PutDeployment(
            deployment=Deployment(
                name=DEPLOYMENT, routes=[Route(model=f"{MODEL}:{run.version}", weight=100)]
            )
        )
    )
    await run.q["training"].put_retraining_policy(
        PutRetrainingPolicy(
            policy=RetrainingPolicy(
                model=MODEL,
                on_drift=True,
                deployment=DEPLOYMENT,
                # Errors decide here; latency only when it is far off: a shared 2-core machine
                # gives a short step's p99 (a handful of requests) too much noise to judge by.
                rollout=RolloutPolicy(
                    steps=[10.0, 50.0, 100.0],
                    interval_s=2.0,
                    min_requests=20,
                    max_latency_ratio=5.0,
                    latency_slack_s=1.0,
                    min_feedback=10**9,
                ),
            )
        )
    )
    run.say(f"deployment {DEPLOYMENT!r} -> {MODEL}:{run.version} (champion); retrain on drift")


async def _traffic(run: Run, count: int, label: str | None) -> None:
    inference = run.q["inference"]
    users = run.rng.integers(0, USERS, count)
    for start in range(0, count, 20):
        batch = [
            inference.predict(Predict(model=DEPLOYMENT, entities={"user_id": [int(u)]}))
            for u in users[start : start + 20]
        ]
        await asyncio.gather(*batch)
        if label:
            run.bar(label, min(start + 20, count), count)


async def traffic(run: Run) -> None:
    await _traffic(run, 400, "predictions")
    await run.flush()
    summary = await run.q["monitoring"].get_summary(GetSummary(model=MODEL, window_s=300))
    p50, p99 = (1000 * (v or 0.0) for v in (summary.latency_p50_s, summary.latency_p99_s))
    run.say(f"{summary.requests} predictions, error rate {summary.error_rate:.1%},")
    run.say(f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, SLO compliance {summary.slo_compliance:.1%}")


async def shift(run: Run) -> None:
    run.shift_started = time.time()
    rows, labels = subscribers(run.rng, shifted=True)
    await _push(run, rows, labels, datetime.now(UTC) - timedelta(seconds=5))
    await _traffic(run, 400, "predictions")
    await run.flush()
    run.say("tenure fell, tickets quadrupled, spend fell 40%, logins grew rarer; churn followed")


async def drift(run: Run) -> None:
    window = time.time() - run.shift_started + 1
    report = await run.q["monitoring"].run_drift_check(
        RunDriftCheck(model=f"{MODEL}:{run.version}", window_s=window)
    )
    drifted = [f.name for f in report.features if f.drifted]
    run.report_id = report.id
    share = f"{report.share_drifted:.0%}"
    run.say(f"{report.status}: {len(drifted)} of {len(report.features)} inputs drifted ({share})")
    run.say(f"drifted: {', '.join(drifted) or 'none'}")
    if not report.dataset_drift:
        raise StageFailed("the shifted traffic was not detected as drift")


async def retrain(run: Run) -> None:
    training = run.q["training"]
    deadline = time.monotonic() + 30
    while True:  # DriftDetected travels through the outbox to training's handler
        sagas = (await training.list_retrainings(ListRetrainings(model=MODEL))).items
        # a saga is listed as soon as it starts; its job id follows once it submitted the job
        if sagas and (sagas[0].job_id is not None or sagas[0].status != "training"):
            break
        if time.monotonic() > deadline:
            raise StageFailed("no retraining job started after the drift report")
        await asyncio.sleep(0.2)
    saga = sagas[0]
    if saga.job_id is None:
        raise StageFailed(f"retraining {saga.status} before its job started: {saga.error}")
    run.say(f"retraining {saga.id} started by {saga.trigger}")
    done = await _follow(run, saga.job_id)
    if done.status != "succeeded":
        raise StageFailed(f"retraining job {done.status}: {done.error}")
    run.retrained = done.version
    verdict = done.verdict
    run.say(f"{MODEL}:{done.version}: accuracy {done.metrics['accuracy']:.3f} on fresh data")
    if verdict is not None:
        baseline = (
            f" vs champion {verdict.baseline_value:.3f}"
            if verdict.baseline_value is not None
            else ""
        )
        run.say(f"gate: {'passed' if verdict.passed else 'failed'}{baseline}")
        if not verdict.passed:
            raise StageFailed(
                "the retrained model did not pass its gate: " + "; ".join(verdict.reasons)
            )


async def rollout(run: Run) -> None:
    from contracts.training import GetRetraining

    training = run.q["training"]
    saga = (await training.list_retrainings(ListRetrainings(model=MODEL))).items[0]
    deadline = time.monotonic() + 120
    shown = ""
    while True:
        saga = await training.get_retraining(GetRetraining(id=saga.id))
        if saga.rollout_id:
            from contracts.inference import GetRollout

            state = await run.q["inference"].get_rollout(GetRollout(id=saga.rollout_id))
            reason = state.history[-1].reason if state.history else ""
            line = f"{state.status} at {state.percent:.0f}%: {reason}"
            if line != shown:
                run.say(line)
                shown = line
        if saga.status in ("succeeded", "failed", "compensated"):
            break
        if time.monotonic() > deadline:
            raise StageFailed(f"the rollout did not finish in time ({saga.status})")
        await _traffic(run, 40, None)
        await run.flush()
    if saga.status != "succeeded":
        raise StageFailed(f"retraining {saga.status}: {saga.error}")
    champion = await run.q["registry"].get_version(GetVersion(ref=f"{MODEL}@champion"))
    run.say(f"{MODEL}:{champion.version} is champion and serves all of {DEPLOYMENT!r}")


# --- driver ------------------------------------------------------------------------------------

STEPS: dict[str, Callable[[Run], Awaitable[None]]] = {
    "ingest": ingest,
    "train": train,
    "register": register,
    "deploy": deploy,
    "traffic": traffic,
    "shift": shift,
    "drift": drift,
    "retrain": retrain,
    "rollout": rollout,
}


def commands(base: str, columns: int) -> list[str]:
    """Ready-to-paste commands against the served API (``columns``: the model input's width)."""
    zeros = ", ".join(["0"] * columns)
    infer = (
        f"""'{{"inputs": [{{"name": "features", "shape": [1, {columns}], "datatype": "FP32","""
        f""" "data": [{zeros}]}}]}}'"""
    )
    return [
        f"curl -s {base}/v1/predict/{DEPLOYMENT} -H 'content-type: application/json'"
        """ -d '{"entities": {"user_id": [7, 42]}}'""",
        f"curl -s {base}/v2/models/{MODEL}/infer -H 'content-type: application/json' -d {infer}",
        f"curl -s {base}/v1/monitoring/models/{MODEL}/summary?window=15m",
        f"curl -s {base}/metrics | grep quarry_monitoring",
    ]


def client_commands(base: str, data_dir: Path) -> list[str]:
    """How to point ``quarry`` and ``app.connect`` at the served demo: create a key in its data
    directory (shown once), then name the server and the key in the environment."""
    return [
        f"quarry keys create --data-dir {shlex.quote(str(data_dir.resolve()))}"
        " --scopes read,predict,ingest,train,admin --name quickstart",
        f"export QUARRY_URL={base} QUARRY_API_KEY=<the key printed above>",
        "quarry models list",
    ]


async def run(settings: Settings, *, serve: bool, out: Any = sys.stdout) -> int:
    """Run every stage on ``settings`` (a fresh data directory), then serve unless told not to.

    Answers the exit status: 0 when every stage succeeded.
    """
    from app.cli.http_server import DRAIN_TIMEOUT_S, Drain, HttpServer
    from app.cli.listen import listen

    sock = listen(settings.host, settings.port)  # a busy port fails here, before any work
    quiet = {} if os.environ.get("QUARRY_LOG_LEVEL") else {"log_level": "WARNING"}
    settings = configure(
        settings.replace(**quiet),
        overrides={
            "inference": {"prediction_log_sample": 1.0},
            "training": {"heartbeat_s": 1.0},
            "monitoring": {"drift_interval_s": 0},
        },
    )
    settings = _with_source_root(settings)
    platform = Platform(settings)
    drain = Drain(
        delay_s=0, timeout_s=DRAIN_TIMEOUT_S, on_start=lambda: setattr(platform, "draining", True)
    )
    kind = http_server_for(settings.http_server, workers=1)  # quickstart serves one process
    server = HttpServer(create_app(platform, host=settings.host), sock, kind=kind, drain=drain)
    # Started before the server, so a failure is raised here rather than logged by the server.
    try:
        await platform.start()
    except BaseException:
        sock.close()
        raise
    serving = asyncio.create_task(server.serve())
    started = asyncio.create_task(server.started.wait())
    await asyncio.wait((serving, started), return_when=asyncio.FIRST_COMPLETED)
    if not server.started.is_set():
        started.cancel()
        await platform.stop()
        serving.result()  # raises what stopped the server, if anything did
        return 1
    base = f"http://{settings.host}:{settings.port}"
    print(f"quarry quickstart: data in {settings.data_dir}, API on {base}", file=out, flush=True)
    shared = Run(
        q={name: platform.client(name, caller="quickstart") for name in platform.built},
        out=out,
        rng=np.random.default_rng(7),
        flush=platform.built["inference"].service.records.flush,
        data_dir=settings.data_dir,
    )
    ok = await _stages(shared, out)
    if ok and serve:
        _serve_banner(shared, base, out, settings.data_dir)
        await _served(serving, platform)
        return 0
    server.stop()
    await _served(serving, platform)
    return 0 if ok else 1


async def _served(serving: asyncio.Task[None], platform: Platform) -> None:
    """Wait for the server to end, then stop the platform if its lifespan did not."""
    try:
        await serving
    finally:
        if platform.started:
            await platform.stop()


def _with_source_root(settings: Settings) -> Settings:
    """``settings`` with the data directory the first source root (the generated Parquet file
    lies there, named relative to it), before the roots configured (none by default)."""
    from app.bootstrap import AVAILABLE_MODULES

    kind = next(spec.settings for spec in AVAILABLE_MODULES if spec.name == "features")
    configured = getattr(settings.module_config(kind), "source_roots", ()) if kind else ()
    roots = [str(settings.data_dir), *configured]
    return configure(settings, overrides={"features": {"source_roots": roots}})


async def _stages(shared: Run, out: Any) -> bool:
    from contracts.common import QuarryError

    for name, step in STEPS.items():
        print(f"[stage] {name}", file=out, flush=True)
        started = time.perf_counter()
        try:
            await step(shared)
        except (StageFailed, QuarryError) as exc:
            print(f"  failed: {exc}", file=out, flush=True)
            return False
        shared.timings[name] = time.perf_counter() - started
        print(f"  done in {shared.timings[name]:.1f} s", file=out, flush=True)
    return True


def _serve_banner(shared: Run, base: str, out: Any, data_dir: Path) -> None:
    print("[stage] serve", file=out)
    total = sum(shared.timings.values())
    print(
        f"  every stage succeeded in {total:.0f} s; the API keeps serving (Ctrl-C stops it)",
        file=out,
    )
    print(f"  OpenAPI:      {base}/schema/swagger", file=out)
    print(f"  drift report: {base}/v1/monitoring/reports/{shared.report_id}/html", file=out)
    print(f"  metrics:      {base}/metrics", file=out)
    print("  the quarry command and app.connect(url, api_key=...) against this server:", file=out)
    for command in client_commands(base, data_dir):
        print(f"  $ {command}", file=out)
    print("  the HTTP API:", file=out)
    for command in commands(base, shared.columns):
        print(f"  $ {command}", file=out)
    print(f"  the web console: {base}/ui", file=out, flush=True)
