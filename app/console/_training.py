"""``/ui/training``: jobs with status, progress, per-epoch curves and log lines; cancel one."""

from __future__ import annotations

from typing import Any, cast, get_args

from litestar import Request, get, post
from litestar.params import FromPath, FromQuery
from litestar.response import Redirect, Response

from app.console._chart import line_chart
from app.console._clients import Clients
from app.console._forms import attempt, done, scopes_of
from app.console._render import page
from app.console._session import checked_form
from contracts.common import Page
from contracts.training import (
    CancelTrainingJob,
    GetJobLogs,
    GetTrainingJob,
    JobStatus,
    ListRetrainings,
    ListTrainingJobs,
    Retraining,
    TrainingJob,
    TrainingService,
)

__all__ = ["training_handlers"]

PAGE = 50
RETRAININGS = 10
LOG_LINES = 300
"""The newest log lines a job's page shows (the API answers up to the job's whole log)."""
STATUSES: tuple[str, ...] = get_args(JobStatus)
SCOPES = scopes_of(TrainingService, "cancel_job")


def training_handlers(q: Clients) -> list[Any]:
    """The training pages and the cancel action."""

    @get("/training")
    async def jobs(
        request: Request[Any, Any, Any],
        cursor: FromQuery[str | None] = None,
        status: FromQuery[str | None] = None,
    ) -> Response[str]:
        wanted = cast(JobStatus, status) if status in STATUSES else None
        found = await q.training.list_jobs(
            ListTrainingJobs(limit=PAGE, cursor=cursor or None, status=wanted)
        )
        retrainings: tuple[Page[Retraining] | None, str | None] = (None, None)
        if not cursor:  # the first page also shows the latest retrainings
            retrainings = await attempt(
                lambda: q.training.list_retrainings(ListRetrainings(limit=RETRAININGS))
            )
        return page(
            request,
            "training.html",
            title="Training",
            found=found,
            shown=wanted,
            statuses=STATUSES,
            retrainings=retrainings,
        )

    @get("/training/jobs/{job_id:str}")
    async def job(request: Request[Any, Any, Any], job_id: FromPath[str]) -> Response[str]:
        found = await q.training.get_job(GetTrainingJob(id=job_id))
        logs = await attempt(
            lambda: q.training.get_job_logs(GetJobLogs(id=job_id, limit=LOG_LINES))
        )
        drawn = curves(found)
        return page(
            request, "job.html", title="Job", job=found, curves=drawn, logs=logs, scopes=SCOPES
        )

    @post("/training/jobs/{job_id:str}/cancel", opt={"scope": SCOPES["cancel_job"]})
    async def cancel(request: Request[Any, Any, Any], job_id: FromPath[str]) -> Redirect:
        await checked_form(request)
        found = await q.training.cancel_job(CancelTrainingJob(id=job_id))
        said = "cancelled" if found.status == "cancelled" else "asked to stop"
        return done(f"/ui/training/jobs/{job_id}", f"job {said}")

    return [jobs, job, cancel]


def curves(job: TrainingJob) -> dict[str, Any]:
    """One line chart per metric the trainer reported after its epochs, by metric name."""
    names = sorted({name for record in job.history for name in record.metrics})
    return {
        name: line_chart(
            [r.metrics[name] for r in job.history if name in r.metrics],
            label=f"{name} per epoch",
            x_label="epoch",
        )
        for name in names
    }
