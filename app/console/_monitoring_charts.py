"""The charts of a model's monitoring page: traffic, latency, errors by code, predictions,
realised quality and cost over the chosen window."""

from __future__ import annotations

from datetime import datetime

from markupsafe import Markup

from app.console._chart import bar_chart, lines_chart
from contracts.monitoring import RealisedMetrics, Series, Summary

__all__ = ["ERROR_CODES", "QUALITY", "monitoring_charts"]

QUALITY = ("accuracy", "f1", "auc", "rmse", "mae", "r2")
"""Realised figures drawn when reported (confusion counts are not quality over time)."""

ERROR_CODES = 4
"""Error codes drawn one by one (the most frequent); the rest count in ``all errors`` only."""


def _moment(value: datetime) -> str:
    return value.strftime("%m-%d %H:%M")


def monitoring_charts(
    what: str, series: Series | None, summary: Summary | None, realised: RealisedMetrics | None
) -> dict[str, Markup]:
    """Chart title -> chart, for the figures there are (an empty chart is left out)."""
    charts: dict[str, Markup] = {}
    if series is not None and series.points:
        points = series.points
        axis = {"start": _moment(points[0].start), "end": _moment(points[-1].end)}
        charts["Requests per second"] = lines_chart(
            {"requests/s": [p.qps for p in points]},
            label=f"requests per second of {what}",
            **axis,
        )
        charts["Latency (ms)"] = lines_chart(
            {
                name: [None if v is None else v * 1000 for v in values]
                for name, values in (
                    ("p50", [p.latency_p50_s for p in points]),
                    ("p95", [p.latency_p95_s for p in points]),
                    ("p99", [p.latency_p99_s for p in points]),
                )
            },
            label=f"latency quantiles of {what} in milliseconds",
            unit="ms",
            **axis,
        )
        totals: dict[str, int] = {}
        for p in points:
            for code, n in p.errors_by_code.items():
                totals[code] = totals.get(code, 0) + n
        codes = sorted(totals, key=lambda c: (-totals[c], c))[:ERROR_CODES]
        rates: dict[str, list[float | None]] = {
            "all errors": [100 * p.error_rate if p.requests else None for p in points]
        }
        for code in codes:
            rates[code] = [
                100 * p.errors_by_code.get(code, 0) / p.requests if p.requests else None
                for p in points
            ]
        charts["Error rate by code (%)"] = lines_chart(
            rates, label=f"share of failed requests of {what} by error code", unit="%", **axis
        )
    if summary is not None and summary.prediction_distribution:
        charts["Prediction distribution"] = bar_chart(
            dict(summary.prediction_distribution),
            label=f"prediction distribution of {what} over the window",
        )
    if realised is not None and realised.points:
        points_r = realised.points
        axis = {"start": _moment(points_r[0].start), "end": _moment(points_r[-1].end)}
        reported = {m for p in points_r for m in p.metrics}
        names = [m for m in QUALITY if m in reported] or sorted(reported)
        quality = lines_chart(
            {m: [p.metrics.get(m) for p in points_r] for m in names[:5]},
            label=f"quality of {what} realised from feedback",
            **axis,
        )
        if quality:
            charts["Realised quality (feedback)"] = quality
        money = lines_chart(
            {"cost": [p.cost for p in points_r], "value": [p.value for p in points_r]},
            label=f"cost of errors and business value fed back for {what}",
            **axis,
        )
        if money:
            charts["Cost and value (feedback)"] = money
    return {title: chart for title, chart in charts.items() if chart}
