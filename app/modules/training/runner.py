"""One run of a training job, on a task worker thread, from claim to outcome.

The run claims the job row (so a redelivered message, or a second worker, does nothing), checks
whether an earlier attempt already registered the version (then it only records it), and
otherwise: starts the job's training process (``process.py``; it imports torch while the run
prepares the dataset through the features contract), hands it the arrays, and waits while it
trains with the named trainer, exports to ONNX (or takes the export the trainer made itself),
checks parity with the trained model on held-out rows and evaluates on the validation split.
Its epochs are recorded as they come (which also heartbeats); cancellation, the job's time limit
and shutdown kill it. Then the run applies the gate
(evaluating the baseline version on the same rows) and registers the version with its lineage
and reference profile under an idempotency key naming the job. The job's one outcome and
``TrainingJobFinished`` are written in one transaction.

This process never imports torch: a training process that crashes or runs out of memory ends
alone, and its job runs again while it has attempts left (``max_attempts``), else fails with
the reason.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from importlib import metadata
from typing import Any, TypeVar

import msgspec
from dramatiq.middleware import TimeLimitExceeded

from app.kernel import context
from app.kernel.db import Database
from app.kernel.events import Outbox
from app.kernel.sources import SourcePolicy
from app.modules.training import store
from app.modules.training.dataset import JobFailed, Prepared, prepare
from app.modules.training.evaluation import judge
from app.modules.training.evaluation import metrics as evaluate
from app.modules.training.heartbeat import Cancelled, Heartbeat, Superseded, TimedOut
from app.modules.training.joblog import JobLog, figures
from app.modules.training.process import WAITING, TrainingProcess, thread_budget
from app.modules.training.trainers import Trainer, TrainerRegistry
from app.modules.training.work import Done, Epoch, Failed, Work
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
from contracts.training import GateVerdict, JobStatus, TrainingJob, TrainingJobFinished

__all__ = ["Cancelled", "JobRunner", "ProcessDied", "Superseded"]

T = TypeVar("T")
TRANSIENT = (Unavailable, DeadlineExceeded)
"""Errors worth a retry of the message (the job goes back to queued)."""
CALL_TIMEOUT_S = 300.0
POLL_S = 0.5
"""How often a run waiting on its training process checks cancellation, limits and shutdown."""
PROGRESS_S = 1.0
"""Epochs are recorded at most this often (and the last one always): each is a write."""


class ProcessDied(Exception):
    """The job's training process ended without an answer (a crash, a kill, out of memory)."""


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
        trainer_modules: tuple[str, ...],
        processes: int,
        resend: Callable[[str], Awaitable[None]],
        heartbeat_s: float,
        stale_s: float,
        logger: logging.Logger,
        sources: SourcePolicy | None = None,
    ) -> None:
        self._sources = sources
        """Where a dataset's source may be read."""
        self._db = db
        self._outbox = outbox
        self._registry = registry
        self._features = features
        self._inference = inference
        self._trainers = trainers
        self._trainer_modules = list(trainer_modules)
        self._threads = thread_budget(processes)
        self._resend = resend
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
        log = JobLog()
        log.add(f"attempt {job.attempt} of {job.spec.max_attempts} started")
        beat = Heartbeat(
            job_id,
            beat=lambda: self.beat(job_id, owner),
            progress=lambda e, n, m, earlier: self.progress(job_id, owner, e, n, m, earlier),
            interval_s=self._heartbeat_s,
            deadline=time.monotonic() + job.spec.time_limit_s,
            logger=self._log,
        )
        beat.start()
        try:
            self._run(job, owner, beat, log)
        except Superseded:
            self._log.warning("training job %s was taken over by another run", job_id)
        except Cancelled:
            self._finish(job, owner, log, status="cancelled", error="cancelled on request")
        except (TimedOut, TimeLimitExceeded):
            limit = job.spec.time_limit_s
            error = f"ran past its time limit ({limit} s)"
            self._finish(job, owner, log, status="failed", error=error)
        except ProcessDied as exc:
            self._retry_or_fail(job, owner, log, str(exc))
        except TRANSIENT as exc:
            # Back to queued: the task queue retries the message (with backoff).
            log.add(f"queued again: {_reason(exc)}")
            self.flush(job, owner, log)
            self._db.write_sync(lambda conn: _requeue(conn, job_id, owner))
            raise Unavailable(f"training job {job_id}: {exc}") from exc
        except (JobFailed, InvalidInput, UnprocessableInput, NotFound) as exc:
            self._finish(job, owner, log, status="failed", error=_reason(exc))
        except Exception as exc:  # a bug or a library failure: the job fails with the reason
            self._log.exception("training job %s failed", job_id)
            error = f"{type(exc).__name__}: {exc}"
            self._finish(job, owner, log, status="failed", error=error)
        finally:
            beat.stop()

    def _run(self, job: TrainingJob, owner: str, beat: Heartbeat, log: JobLog) -> None:
        earlier = self._registered_by(job)
        if earlier is not None:  # an earlier attempt died after registering: keep its version
            log.add(f"version {earlier.version} was registered by an earlier attempt")
            self._finish(job, owner, log, status="succeeded", version=earlier.version)
            return
        spec = job.spec
        trainer = self._trainers.get(spec.trainer)
        hyperparameters = self._trainers.check_hyperparameters(spec.trainer, spec.hyperparameters)
        process = TrainingProcess(
            job.id,
            threads=self._threads,
            logger=self._log,
            torch=trainer.needs_torch,
            on_line=log.add,
        )
        try:  # the process imports torch (if the trainer needs it) while the dataset is prepared
            data = prepare(
                spec.dataset,
                spec.split,
                trainer.task,
                self._features,
                self.call,
                sources=self._sources,
            )
            log.add(
                f"dataset: {data.rows} rows ({len(data.x_train)} to train on,"
                f" {len(data.x_valid)} to validate), {len(data.columns)} columns"
            )
            beat.check()
            process.send(self._work(job, trainer, hyperparameters, data))
            log.add(f"training with {spec.trainer} on {spec.device}")
            done = self._wait(process, beat, job, owner, log)
        finally:
            process.kill()
        log.add(f"exported to ONNX (parity {done.parity:.3g}); validation {figures(done.scores)}")
        verdict = self._gate(job, data, done.scores)
        if verdict is not None:
            log.add(_gate_line(verdict))
        beat.check()
        request = RegisterVersion(
            name=spec.model,
            artifact=done.onnx,
            description=spec.description or f"trained by job {job.id} ({spec.trainer})",
            tags=_verdict_tags(verdict),
            metrics={**done.scores, "parity_max_abs_diff": done.parity},
            params={"trainer": spec.trainer, **{k: str(v) for k, v in hyperparameters.items()}},
            lineage=Lineage(
                training_job_id=job.id,
                dataset_digest=data.digest,
                feature_service=data.feature_service,
                transform_state=data.transform_state,
                extra=done.lineage
                | data.lineage
                | _library_versions()
                | {"rows": str(data.rows)}
                | ({"classes": json.dumps(data.classes)} if data.classes else {}),
            ),
            reference_profile=done.profile,
        )
        version = self.call(
            lambda: self._registry.register_version(request), key=f"training-job-{job.id}"
        )
        log.add(f"registered {spec.model}:{version.version}")
        if verdict is not None and verdict.passed and spec.gate and spec.gate.promote_to:
            gate = spec.gate
            self.call(
                lambda: self._registry.set_alias(
                    SetAlias(name=spec.model, alias=gate.promote_to or "", version=version.version)
                )
            )
            log.add(f"alias {gate.promote_to} now points at version {version.version}")
        final = {**{f"train_{k}": v for k, v in done.train_metrics.items()}, **done.scores}
        self._finish(
            job,
            owner,
            log,
            status="succeeded",
            version=version.version,
            metrics=final,
            verdict=verdict,
        )

    # --- the training process ---------------------------------------------------------------

    def _work(
        self, job: TrainingJob, trainer: Trainer, hyperparameters: dict[str, Any], data: Prepared
    ) -> Work:
        module = trainer.fn.__module__
        modules = self._trainer_modules + ([module] if module != "__main__" else [])
        return Work(
            job_id=job.id,
            trainer=trainer.name,
            trainer_origin=trainer.origin,
            trainer_modules=list(dict.fromkeys(modules)),
            sys_path=[p for p in sys.path if p],
            task=trainer.task,
            hyperparameters=hyperparameters,
            device=job.spec.device,
            seed=job.spec.split.seed,
            columns=data.columns,
            classes=data.classes,
            x_train=Tensor.from_numpy(data.x_train),
            y_train=Tensor.from_numpy(data.y_train),
            x_valid=Tensor.from_numpy(data.x_valid),
            y_valid=Tensor.from_numpy(data.y_valid),
        )

    def _wait(
        self, process: TrainingProcess, beat: Heartbeat, job: TrainingJob, owner: str, log: JobLog
    ) -> Done:
        """Record the process's epochs (at most one a second) and log lines until its answer;
        stop on cancellation, the time limit or shutdown (the caller kills the process)."""
        unrecorded: Epoch | None = None
        skipped: list[tuple[int, dict[str, float]]] = []  # epochs between two records
        recorded_at = flushed_at = -PROGRESS_S
        while True:
            beat.check()
            if self.loop is None:
                raise Unavailable("the training module is stopping", retry_after=5)
            if log and time.monotonic() - flushed_at >= PROGRESS_S:
                self.flush(job, owner, log)
                flushed_at = time.monotonic()
            reply = process.reply(timeout=POLL_S)
            if reply is WAITING:
                continue
            if isinstance(reply, Epoch):
                log.add(f"epoch {reply.epoch} of {reply.epochs}: {figures(reply.metrics)}")
            if reply is None:
                raise ProcessDied(process.exit_reason())
            if isinstance(reply, Failed):
                raise JobFailed(reply.reason)
            if isinstance(reply, Epoch) and unrecorded is not None:
                skipped.append((unrecorded.epoch, unrecorded.metrics))
            last = reply if isinstance(reply, Epoch) else unrecorded
            due = isinstance(reply, Done) or time.monotonic() - recorded_at >= PROGRESS_S
            if last is not None and due:
                beat.progress(last.epoch, last.epochs, last.metrics, skipped)
                recorded_at, last, skipped = time.monotonic(), None, []
            if isinstance(reply, Done):
                return reply
            unrecorded = last

    def _retry_or_fail(self, job: TrainingJob, owner: str, log: JobLog, reason: str) -> None:
        """The process died: run the job again while it has attempts left, else fail it."""
        attempts = job.spec.max_attempts
        if job.attempt >= attempts:
            error = f"{reason} (attempt {job.attempt} of {attempts})"
            self._finish(job, owner, log, status="failed", error=error)
            return
        log.add(f"{reason}; queued to run again")
        self.flush(job, owner, log)
        self._log.warning(
            "training job %s: %s; running it again (attempt %d of %d next)",
            job.id,
            reason,
            job.attempt + 1,
            attempts,
        )
        if self._db.write_sync(lambda conn: _back_to_queue(conn, job.id, owner, reason)):
            try:
                self.call(lambda: self._resend(job.id))
            except QuarryError:  # stopping: queued jobs are sent again at start-up
                self._log.warning("training job %s stays queued until start-up", job.id)

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

    def flush(self, job: TrainingJob, owner: str, log: JobLog) -> None:
        """Write the run's waiting log lines (dropped when the run no longer holds the job)."""
        lines = log.take()
        if lines:
            self._db.write_sync(
                lambda conn: store.append_logs(conn, job.id, owner, job.attempt, lines)
            )

    def _finish(
        self,
        job: TrainingJob,
        owner: str,
        log: JobLog,
        *,
        status: JobStatus,
        error: str | None = None,
        version: int | None = None,
        metrics: dict[str, float] | None = None,
        verdict: GateVerdict | None = None,
    ) -> None:
        log.add(status if error is None else f"{status}: {error}")
        lines = log.take()

        def write(conn: Any) -> bool:
            store.append_logs(conn, job.id, owner, job.attempt, lines)
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
                        status=status,
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

    def progress(  # noqa: PLR0917 - the heartbeat's callback passes the epoch positionally
        self,
        job_id: str,
        owner: str,
        epoch: int,
        epochs: int,
        metrics: dict[str, float],
        earlier: Sequence[tuple[int, dict[str, float]]],
    ) -> bool | None:
        """Record an epoch and the unrecorded ``earlier`` ones; see :func:`store.progress`."""
        clean = {k: float(v) for k, v in metrics.items()}
        before = [(e, {k: float(v) for k, v in m.items()}) for e, m in earlier]
        return self._db.write_sync(
            lambda conn: store.progress(
                conn,
                job_id,
                owner,
                time.time(),
                epoch=epoch,
                epochs=epochs,
                metrics=clean,
                earlier=before,
            )
        )

    @property
    def heartbeat_s(self) -> float:
        """Seconds between heartbeats of a running job."""
        return self._heartbeat_s


def _requeue(conn: Any, job_id: str, owner: str) -> None:
    conn.execute(
        store.jobs.update()
        .where(store.jobs.c.id == job_id, store.jobs.c.owner == owner)
        .values(status="queued", owner=None, attempt=store.jobs.c.attempt - 1)
    )


def _back_to_queue(conn: Any, job_id: str, owner: str, reason: str) -> bool:
    """Queue the job again after a failed attempt (which counts), keeping why it failed."""
    result = conn.execute(
        store.jobs.update()
        .where(store.jobs.c.id == job_id, store.jobs.c.owner == owner)
        .values(status="queued", owner=None, error=reason, updated_at=time.time())
    )
    return bool(result.rowcount == 1)


def _reason(exc: Exception) -> str:
    return exc.message if isinstance(exc, QuarryError) else str(exc)


def _gate_line(verdict: GateVerdict) -> str:
    """The gate's verdict as the job's log says it: the metric, against the baseline if any."""
    said = "passed" if verdict.passed else "failed"
    line = f"gate {said}: {verdict.metric} {verdict.value:.4g}"
    if verdict.baseline_version is not None and verdict.baseline_value is not None:
        line += f" against version {verdict.baseline_version} ({verdict.baseline_value:.4g})"
    return line + "".join(f"; {reason}" for reason in verdict.reasons)


def _verdict_tags(verdict: GateVerdict | None) -> dict[str, str]:
    if verdict is None:
        return {}
    tags = {"gate": "passed" if verdict.passed else "failed", "gate_metric": verdict.metric}
    if verdict.reasons:
        tags["gate_reasons"] = "; ".join(verdict.reasons)[:1000]
    return tags


def _library_versions() -> dict[str, str]:
    found = {}
    for dist in ("torch", "onnx", "onnxruntime", "onnxruntime-gpu", "numpy", "quarryml"):
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return found
