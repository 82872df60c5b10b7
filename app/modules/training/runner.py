"""One run of a training job, on a task worker thread, from claim to outcome.

The run claims the job row (so a redelivered message, or a second worker, does nothing), checks
whether an earlier attempt already registered the version (then it only records it), and
otherwise: prepares the dataset, trains with the named trainer (reporting epochs, which also
heartbeats and checks for cancellation), exports to ONNX, checks parity with torch on held-out
rows, evaluates on the validation split, applies the gate (evaluating the baseline version on the
same rows), and registers the version with its lineage and reference profile under an
idempotency key naming the job. The job's one outcome and ``TrainingJobFinished`` are written in
one transaction.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from importlib import metadata
from typing import Any, TypeVar

import msgspec
import numpy as np
from dramatiq.middleware import TimeLimitExceeded

from app.kernel import context
from app.kernel.db import Database
from app.kernel.events import Outbox
from app.modules.training import store
from app.modules.training.dataset import JobFailed, Prepared, prepare
from app.modules.training.evaluation import judge
from app.modules.training.evaluation import metrics as evaluate
from app.modules.training.trainers import TrainerRegistry, TrainingData, pick_device
from contracts.common import (
    DeadlineExceeded,
    InvalidInput,
    NotFound,
    QuarryError,
    Tensor,
    Unavailable,
    UnprocessableInput,
)
from contracts.features import FeaturesService, TransformRows
from contracts.inference import InferenceService, Predict
from contracts.registry import (
    GetVersion,
    Lineage,
    ListVersions,
    RegisterVersion,
    RegistryService,
    SetAlias,
    VersionInfo,
)
from contracts.training import GateVerdict, TrainingJob, TrainingJobFinished

__all__ = ["Cancelled", "JobRunner", "Superseded"]

T = TypeVar("T")
TRANSIENT = (Unavailable, DeadlineExceeded)
"""Errors worth a retry of the message (the job goes back to queued)."""
CALL_TIMEOUT_S = 300.0


class Cancelled(Exception):
    """Cancellation was asked for; the run stops at its next check."""


class TimedOut(Exception):
    """The run went past its job's ``time_limit_s`` (checked at every epoch and stage)."""


class Superseded(Exception):
    """Another run took the job (this one's heartbeat went stale): this one stops quietly."""


class JobRunner:
    """Runs training jobs of one training module."""

    def __init__(
        self,
        *,
        db: Database,
        outbox: Outbox,
        registry: RegistryService,
        features: FeaturesService | None,
        inference: InferenceService | None,
        trainers: TrainerRegistry,
        heartbeat_s: float,
        stale_s: float,
        logger: logging.Logger,
    ) -> None:
        self._db = db
        self._outbox = outbox
        self._registry = registry
        self._features = features
        self._inference = inference
        self._trainers = trainers
        self._heartbeat_s = heartbeat_s
        self._stale_s = stale_s
        self._log = logger
        self.loop: Any = None
        """The module's event loop, set at start-up: contract calls run there."""

    # --- plumbing ---------------------------------------------------------------------------

    def call(self, make: Callable[[], Awaitable[T]], *, key: str | None = None) -> T:
        """Run ``make()`` on the module's loop (with a deadline, and ``key`` as idempotency key)."""
        import asyncio

        loop = self.loop
        if loop is None or loop.is_closed():
            raise Unavailable("the training module is not running here", retry_after=5)

        async def run() -> T:
            ctx = context.current().with_timeout(CALL_TIMEOUT_S)
            if key is not None:
                ctx = msgspec.structs.replace(ctx, idempotency_key=key)
            with context.use(ctx):
                return await make()

        return asyncio.run_coroutine_threadsafe(run(), loop).result(CALL_TIMEOUT_S + 5)

    # --- a run ------------------------------------------------------------------------------

    def run(self, job_id: str) -> None:
        """Claim and run the job; a job that is running elsewhere or finished is left alone."""
        owner = uuid.uuid4().hex
        now = time.time()
        outcome = self._db.write_sync(
            lambda conn: store.claim(conn, job_id, owner, now, now - self._stale_s)
        )
        if outcome != "claimed":
            if outcome == "exhausted":
                self._publish_exhausted(job_id)
            self._log.info("training job %s not run: %s", job_id, outcome)
            return
        job = self._db.read_sync(lambda conn: store.get(conn, job_id))
        assert job is not None
        self._log.info("training job %s: attempt %d", job_id, job.attempt)
        beat = _Heartbeat(self, job_id, owner, time.monotonic() + job.spec.time_limit_s)
        beat.start()
        try:
            self._run(job, owner, beat)
        except Superseded:
            self._log.warning("training job %s was taken over by another run", job_id)
        except Cancelled:
            self._finish(job, owner, status="cancelled", error="cancelled on request")
        except (TimedOut, TimeLimitExceeded):
            limit = job.spec.time_limit_s
            self._finish(job, owner, status="failed", error=f"ran past its time limit ({limit} s)")
        except TRANSIENT as exc:
            # Back to queued: the task queue retries the message (with backoff).
            self._db.write_sync(lambda conn: _requeue(conn, job_id, owner))
            raise Unavailable(f"training job {job_id}: {exc}") from exc
        except (JobFailed, InvalidInput, UnprocessableInput, NotFound) as exc:
            self._finish(job, owner, status="failed", error=_reason(exc))
        except Exception as exc:  # a bug or a library failure: the job fails with the reason
            self._log.exception("training job %s failed", job_id)
            self._finish(job, owner, status="failed", error=f"{type(exc).__name__}: {exc}")
        finally:
            beat.stop()

    def _run(self, job: TrainingJob, owner: str, beat: _Heartbeat) -> None:
        earlier = self._registered_by(job)
        if earlier is not None:  # an earlier attempt died after registering: keep its version
            self._finish(job, owner, status="succeeded", version=earlier.version)
            return
        spec = job.spec
        trainer = self._trainers.get(spec.trainer)
        hyperparameters = self._trainers.check_hyperparameters(spec.trainer, spec.hyperparameters)
        data = prepare(spec.dataset, spec.split, trainer.task, self._features, self.call)
        beat.check()
        _limit_threads()

        def report(epoch: int, epochs: int, metrics: dict[str, float]) -> None:
            beat.progress(epoch, epochs, metrics)

        module, train_metrics = trainer.fn(
            TrainingData(
                x_train=data.x_train,
                y_train=data.y_train,
                x_valid=data.x_valid,
                y_valid=data.y_valid,
                columns=data.columns,
                classes=data.classes,
                hyperparameters=hyperparameters,
                device=pick_device(spec.device),
                seed=spec.split.seed,
                report=report,
            )
        )
        beat.check()
        from app.modules.training.export import check_parity, export_onnx
        from app.modules.training.profile import reference_profile

        module = module.cpu().eval()
        onnx_bytes = export_onnx(module, len(data.columns), task=trainer.task)
        parity = check_parity(onnx_bytes, module, data.x_valid[:256], task=trainer.task)
        valid_outputs = _run_onnx(onnx_bytes, data.x_valid)
        scores = evaluate(trainer.task, data.y_valid, valid_outputs)
        verdict = self._gate(job, data, scores)
        beat.check()
        train_outputs = _run_onnx(onnx_bytes, data.x_train)
        profile = reference_profile(
            data.columns, data.x_train, train_outputs, task=trainer.task, seed=spec.split.seed
        )
        request = RegisterVersion(
            name=spec.model,
            artifact=onnx_bytes,
            description=spec.description or f"trained by job {job.id} ({spec.trainer})",
            tags=_verdict_tags(verdict),
            metrics={**scores, "parity_max_abs_diff": parity},
            params={"trainer": spec.trainer, **{k: str(v) for k, v in hyperparameters.items()}},
            lineage=Lineage(
                training_job_id=job.id,
                dataset_digest=data.digest,
                feature_service=data.feature_service,
                transform_state=data.transform_state,
                extra=_library_versions()
                | {"rows": str(data.rows)}
                | ({"classes": json.dumps(data.classes)} if data.classes else {}),
            ),
            reference_profile=profile,
        )
        version = self.call(
            lambda: self._registry.register_version(request), key=f"training-job-{job.id}"
        )
        if verdict is not None and verdict.passed and spec.gate and spec.gate.promote_to:
            gate = spec.gate
            self.call(
                lambda: self._registry.set_alias(
                    SetAlias(name=spec.model, alias=gate.promote_to or "", version=version.version)
                )
            )
        final = {**{f"train_{k}": float(v) for k, v in train_metrics.items()}, **scores}
        self._finish(
            job, owner, status="succeeded", version=version.version, metrics=final, verdict=verdict
        )

    # --- gate -------------------------------------------------------------------------------

    def _gate(
        self, job: TrainingJob, data: Prepared, scores: dict[str, float]
    ) -> GateVerdict | None:
        gate = job.spec.gate
        if gate is None:
            return None
        if gate.metric not in scores:
            raise JobFailed(f"the gate's metric {gate.metric!r} is not one of {sorted(scores)}")
        baseline = None
        if gate.baseline:
            try:
                baseline = self.call(
                    lambda: self._registry.get_version(
                        GetVersion(ref=f"{job.spec.model}@{gate.baseline}")
                    )
                )
            except NotFound:
                baseline = None
        if baseline is None:
            return judge(gate, scores[gate.metric], None, None)
        value = self._evaluate_baseline(baseline, data, job)
        return judge(gate, scores[gate.metric], value.get(gate.metric), baseline.version)

    def _evaluate_baseline(
        self, baseline: VersionInfo, data: Prepared, job: TrainingJob
    ) -> dict[str, float]:
        """The baseline version's metrics on the same validation rows, through inference."""
        if self._inference is None:
            raise Unavailable("the gate needs the inference module to evaluate the baseline")
        state = baseline.lineage.transform_state
        features = self._features
        if state and features is not None:
            rows = data.valid_rows
            answer = self.call(
                lambda: features.transform_rows(TransformRows(state=state, rows=rows))
            )
            x = answer.values
        else:
            x = Tensor.from_numpy(data.x_valid)
        name = baseline.signature.inputs[0].name
        inference = self._inference
        prediction = self.call(
            lambda: inference.predict(
                Predict(model=f"{baseline.name}:{baseline.version}", inputs={name: x}, coerce=True)
            )
        )
        outputs = {k: t.to_numpy() for k, t in prediction.outputs.items()}
        trainer = self._trainers.get(job.spec.trainer)
        try:
            return evaluate(trainer.task, data.y_valid, outputs)
        except (KeyError, ValueError, InvalidInput) as exc:
            raise JobFailed(
                f"the baseline {baseline.name}:{baseline.version} cannot be evaluated like the"
                f" candidate ({exc}); compare models of the same task"
            ) from None

    # --- outcomes ---------------------------------------------------------------------------

    def _registered_by(self, job: TrainingJob) -> VersionInfo | None:
        if job.attempt <= 1:
            return None
        try:
            page = self.call(
                lambda: self._registry.list_versions(ListVersions(name=job.spec.model, limit=50))
            )
        except NotFound:
            return None
        return next((v for v in page.items if v.lineage.training_job_id == job.id), None)

    def _finish(
        self,
        job: TrainingJob,
        owner: str,
        *,
        status: str,
        error: str | None = None,
        version: int | None = None,
        metrics: dict[str, float] | None = None,
        verdict: GateVerdict | None = None,
    ) -> None:
        def write(conn: Any) -> bool:
            done = store.finish(
                conn,
                job.id,
                owner,
                time.time(),
                status=status,
                error=error,
                version=version,
                metrics=metrics,
                verdict=verdict,
            )
            if done:
                self._outbox.add(
                    conn,
                    TrainingJobFinished(
                        id=job.id,
                        model=job.spec.model,
                        status=status,  # type: ignore[arg-type]
                        version=version,
                        error=error,
                        gate_passed=None if verdict is None else verdict.passed,
                    ),
                )
            return done

        if self._db.write_sync(write):
            self._log.info("training job %s %s", job.id, status)

    def _publish_exhausted(self, job_id: str) -> None:
        def write(conn: Any) -> None:
            job = store.get(conn, job_id)
            if job is not None:
                self._outbox.add(
                    conn,
                    TrainingJobFinished(
                        id=job.id, model=job.spec.model, status="failed", error=job.error
                    ),
                )

        self._db.write_sync(write)

    # --- heartbeats -------------------------------------------------------------------------

    def beat(self, job_id: str, owner: str) -> bool | None:
        """Refresh a run's heartbeat; see :func:`store.beat`."""
        return self._db.write_sync(lambda conn: store.beat(conn, job_id, owner, time.time()))

    def progress(
        self, job_id: str, owner: str, epoch: int, epochs: int, metrics: dict[str, float]
    ) -> bool | None:
        """Record an epoch; see :func:`store.progress`."""
        clean = {k: float(v) for k, v in metrics.items()}
        return self._db.write_sync(
            lambda conn: store.progress(
                conn, job_id, owner, time.time(), epoch=epoch, epochs=epochs, metrics=clean
            )
        )

    @property
    def heartbeat_s(self) -> float:
        """Seconds between heartbeats of a running job."""
        return self._heartbeat_s


class _Heartbeat:
    """Keeps a run's heartbeat fresh from a thread; remembers cancellation and loss."""

    def __init__(self, runner: JobRunner, job_id: str, owner: str, deadline: float) -> None:
        self._runner = runner
        self._deadline = deadline
        self._job_id = job_id
        self._owner = owner
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"heartbeat-{job_id}", daemon=True)
        self.cancelled = False
        self.lost = False

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(self._runner.heartbeat_s):
            try:
                self._note(self._runner.beat(self._job_id, self._owner))
            except Exception:  # a database hiccup: the next beat may work
                self._runner._log.warning("heartbeat of job %s failed", self._job_id, exc_info=True)

    def _note(self, flag: bool | None) -> None:
        if flag is None:
            self.lost = True
        elif flag:
            self.cancelled = True

    def progress(self, epoch: int, epochs: int, metrics: dict[str, float]) -> None:
        self._note(self._runner.progress(self._job_id, self._owner, epoch, epochs, metrics))
        self.check()

    def check(self) -> None:
        if self.lost:
            raise Superseded(self._job_id)
        if self.cancelled:
            raise Cancelled(self._job_id)
        if time.monotonic() > self._deadline:
            raise TimedOut(self._job_id)


def _limit_threads() -> None:
    """Half the cores per training run: a run must not starve the process's other work."""
    import os

    from app.modules.training.trainers import import_torch

    import_torch().set_num_threads(max(1, (os.cpu_count() or 1) // 2))


def _requeue(conn: Any, job_id: str, owner: str) -> None:
    conn.execute(
        store.jobs.update()
        .where(store.jobs.c.id == job_id, store.jobs.c.owner == owner)
        .values(status="queued", owner=None, attempt=store.jobs.c.attempt - 1)
    )


def _reason(exc: Exception) -> str:
    return exc.message if isinstance(exc, QuarryError) else str(exc)


def _verdict_tags(verdict: GateVerdict | None) -> dict[str, str]:
    if verdict is None:
        return {}
    tags = {"gate": "passed" if verdict.passed else "failed", "gate_metric": verdict.metric}
    if verdict.reasons:
        tags["gate_reasons"] = "; ".join(verdict.reasons)[:1000]
    return tags


def _run_onnx(onnx_bytes: bytes, x: np.ndarray) -> dict[str, np.ndarray]:
    import onnxruntime

    session = onnxruntime.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    outputs = session.run(None, {name: np.ascontiguousarray(x, dtype=np.float32)})
    return {o.name: np.asarray(v) for o, v in zip(session.get_outputs(), outputs, strict=True)}


def _library_versions() -> dict[str, str]:
    found = {}
    for dist in ("torch", "onnx", "onnxruntime", "onnxruntime-gpu", "numpy", "quarryml"):
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return found
