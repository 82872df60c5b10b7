"""``/ui/monitoring``: summary figures per model, drift reports newest first, run a check; a
model's page charts its traffic, latency, errors, predictions and realised quality over a
chosen window, of every version or one."""

from __future__ import annotations

from typing import Any

from litestar import MediaType, Request, get, post
from litestar.params import FromPath, FromQuery
from litestar.response import Redirect, Response

from app.console._clients import Clients
from app.console._forms import done, gather, scopes_of, text
from app.console._monitoring_charts import monitoring_charts
from app.console._render import SECURITY_HEADERS, page
from app.console._session import checked_form
from contracts.common import InvalidInput
from contracts.monitoring import (
    GetDriftReport,
    GetRealisedMetrics,
    GetSeries,
    GetSummary,
    ListDriftReports,
    MonitoringService,
    RunDriftCheck,
)
from contracts.registry import ListModels, ListVersions

__all__ = ["monitoring_handlers"]

MODELS_PAGE = 20
REPORTS_PAGE = 50
WINDOWS = {"5m": 300.0, "15m": 900.0, "1h": 3600.0, "1d": 86400.0}
"""Windows a drift check may look back over."""
CHART_WINDOWS = {"1h": 3600.0, "6h": 6 * 3600.0, "24h": 86400.0, "7d": 7 * 86400.0}
"""Windows a model's monitoring page may show."""
DEFAULT_CHART_WINDOW = "1h"
CHART_STEPS = 60
REALISED_STEPS = 24
VERSIONS = 50
"""Versions the page offers to show one by one (the newest)."""
SCOPES = scopes_of(MonitoringService, "run_drift_check")
REPORT_HEADERS = {
    **SECURITY_HEADERS,
    # the report is self-contained: its own inline style, inline SVG, nothing fetched
    "content-security-policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:;"
    " frame-ancestors 'none'",
}


def monitoring_handlers(q: Clients) -> list[Any]:
    """The monitoring pages and the drift check action."""

    @get("/monitoring")
    async def monitoring(
        request: Request[Any, Any, Any], cursor: FromQuery[str | None] = None
    ) -> Response[str]:
        models = await q.registry.list_models(ListModels(limit=MODELS_PAGE, cursor=cursor or None))
        names = [m.name for m in models.items]
        answers = await gather(
            *(lambda n=n: q.monitoring.get_summary(GetSummary(model=n)) for n in names),
            *(
                lambda n=n: q.monitoring.list_drift_reports(ListDriftReports(model=n, limit=3))
                for n in names
            ),
        )
        summaries = dict(zip(names, answers[: len(names)], strict=True))
        reports = [r for found, _ in answers[len(names) :] if found for r in found.items]
        reports.sort(key=lambda r: r.created_at, reverse=True)
        return page(
            request,
            "monitoring.html",
            title="Monitoring",
            models=models,
            summaries=summaries,
            reports=reports,
        )

    @get("/monitoring/{model:str}")
    async def model_monitoring(
        request: Request[Any, Any, Any],
        model: FromPath[str],
        cursor: FromQuery[str | None] = None,
        window: FromQuery[str] = DEFAULT_CHART_WINDOW,
        version: FromQuery[str | None] = None,
    ) -> Response[str]:
        shown = window if window in CHART_WINDOWS else DEFAULT_CHART_WINDOW
        window_s = CHART_WINDOWS[shown]
        number = int(version) if version and version.isdigit() and len(version) < 10 else None
        versions = await q.registry.list_versions(ListVersions(name=model, limit=VERSIONS))
        summary, series, realised, reports = await gather(
            lambda: q.monitoring.get_summary(
                GetSummary(model=model, version=number, window_s=window_s)
            ),
            lambda: q.monitoring.get_series(
                GetSeries(model=model, version=number, window_s=window_s, buckets=CHART_STEPS)
            ),
            lambda: q.monitoring.get_realised_metrics(
                GetRealisedMetrics(
                    model=model, version=number, window_s=window_s, buckets=REALISED_STEPS
                )
            ),
            lambda: q.monitoring.list_drift_reports(
                ListDriftReports(model=model, limit=REPORTS_PAGE, cursor=cursor or None)
            ),
        )
        what = f"{model}:{number}" if number else f"{model} (every version)"
        return page(
            request,
            "monitoring_model.html",
            title=f"Monitoring {model}",
            model=model,
            version=number,
            versions=[v.version for v in versions.items],
            summary=summary,
            charts=monitoring_charts(what, series[0], summary[0], realised[0]),
            unavailable=next((e for _, e in (summary, series, realised) if e), None),
            reports=reports,
            window=shown,
            windows=list(CHART_WINDOWS),
            check_windows=list(WINDOWS),
            scopes=SCOPES,
        )

    @get("/monitoring/reports/{report_id:str}")
    async def report(report_id: FromPath[str]) -> Response[str]:
        rendered = await q.monitoring.render_drift_report(GetDriftReport(id=report_id))
        return Response(rendered.html, media_type=MediaType.HTML, headers=REPORT_HEADERS)

    @post("/monitoring/{model:str}/drift", opt={"scope": SCOPES["run_drift_check"]})
    async def run_check(request: Request[Any, Any, Any], model: FromPath[str]) -> Redirect:
        form = await checked_form(request)
        window = text(form, "window", required=False) or "1h"
        if window not in WINDOWS:
            raise InvalidInput(f"window must be one of {', '.join(WINDOWS)}")
        found = await q.monitoring.run_drift_check(
            RunDriftCheck(model=model, window_s=WINDOWS[window])
        )
        verdict = found.message or found.status.replace("_", " ")
        return done(f"/ui/monitoring/{model}", f"drift check of {model}: {verdict}")

    return [monitoring, model_monitoring, report, run_check]
