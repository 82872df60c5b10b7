"""A drift report as one self-contained HTML page: inline CSS and inline SVG charts, no scripts.

Every chart is an ``<svg class="chart" role="img" aria-label="...">``: one distribution per
tested column (overlaid histograms on shared bins, or paired bars per category), one for the
prediction when the report has one, and two time series (p99 latency in ms, error rate). The
same input renders the same bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from html import escape

import numpy as np

from app.modules.monitoring.columns import user_columns
from app.modules.monitoring.drift import category_labels, prediction_values
from app.modules.monitoring.units import duration, time_format
from contracts.monitoring import DriftReport, FeatureDrift

__all__ = ["render"]

REFERENCE_COLOUR = "#4c78a8"
CURRENT_COLOUR = "#f58518"
LATENCY_COLOUR = "#54a24b"
ERROR_COLOUR = "#e45756"
WIDTH, HEIGHT = 380, 200
LEFT, RIGHT, TOP, BOTTOM = 60, 14, 40, 34
BINS = 20
MAX_CATEGORIES = 12

Series = Sequence[tuple[datetime, float | None]]
Tick = tuple[float, str, str]
"""A label under the x axis: its x, its text and its text-anchor."""

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1f2933;
background:#f7f8fa;margin:0;padding:24px 32px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 10px}
.meta{display:flex;flex-wrap:wrap;gap:8px 28px;margin:12px 0;color:#52606d}
.meta b{color:#1f2933;font-weight:600}
.badge{display:inline-block;padding:1px 10px;border-radius:10px;font-weight:600;font-size:12px}
.ok{background:#e3f4e6;color:#1e7b34}.drift{background:#fde8e8;color:#b42318}
.insufficient_data{background:#eceff3;color:#52606d}
table{border-collapse:collapse;background:#fff;border:1px solid #e4e7eb;min-width:60%}
th,td{padding:6px 12px;text-align:left;border-bottom:1px solid #eef0f3}
th{background:#f0f2f5;font-weight:600;font-size:13px}td.num{text-align:right;
font-variant-numeric:tabular-nums}
.grid{display:flex;flex-wrap:wrap;gap:16px}
.card{background:#fff;border:1px solid #e4e7eb;border-radius:8px;padding:8px}
svg text{font:11px system-ui,sans-serif;fill:#52606d}svg .title{font-size:13px;fill:#1f2933;
font-weight:600}.message{color:#52606d;font-style:italic}
"""


def render(
    report: DriftReport,
    *,
    reference: np.ndarray | None,
    current: np.ndarray | None,
    columns: list[str],
    latency: list[tuple[datetime, float | None]],
    error_rate: list[tuple[datetime, float | None]],
    title: str | None = None,
    reference_predictions: Mapping[str, np.ndarray] | None = None,
    current_predictions: Mapping[str, np.ndarray] | None = None,
) -> str:
    """The report as an HTML page.

    ``reference`` and ``current`` are the compared inputs (``[n, len(columns)]``) the charts
    are drawn from (``None``: the charts say there is no sample); ``latency`` holds p99
    latencies in milliseconds and ``error_rate`` shares (0-1) over time, ``None`` for a gap.
    The prediction chart is drawn from the model outputs when both are given, else it shows the
    test statistic against its threshold.
    """
    heading = title or f"Drift report: {report.model} v{report.version}"
    if reference is not None and current is not None:
        columns, reference, current = _as_tested(report, columns, reference, current)
    parts = [
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(heading)}</title><style>{_CSS}</style></head><body>",
        _header(report, heading),
        _table("Columns", report.features),
        "<h2>Distributions</h2><div class='grid'>",
        *(
            _card(
                _distribution(
                    f.name, f.kind, _column(reference, columns, f), _column(current, columns, f)
                )
            )
            for f in report.features
        ),
        "</div>",
    ]
    if report.prediction is not None:
        parts += [
            _table("Prediction", [report.prediction]),
            "<div class='grid' style='margin-top:16px'>",
            _card(_prediction_chart(report.prediction, reference_predictions, current_predictions)),
            "</div>",
        ]
    parts += [
        f"<h2>Service, the {escape(duration(report.window_s))} before the report</h2>",
        "<div class='grid'>",
        _card(_line_chart("p99 latency (ms)", latency, LATENCY_COLOUR, _ms)),
        _card(_line_chart("Error rate", error_rate, ERROR_COLOUR, _percent)),
        "</div></body></html>",
    ]
    return "\n".join(parts) + "\n"


# --- sections -------------------------------------------------------------------------------


def _header(report: DriftReport, heading: str) -> str:
    status = escape(report.status)
    share = f"{_percent(report.share_drifted)} (threshold {_percent(report.share_threshold)})"
    items = [
        ("Model", report.model),
        ("Version", str(report.version)),
        ("Created", report.created_at.isoformat(timespec="seconds")),
        ("Window", duration(report.window_s)),
        ("Dataset drift", "yes" if report.dataset_drift else "no"),
        ("Columns drifted", share),
        ("Rows", f"{report.reference_rows} reference / {report.current_rows} current"),
    ]
    meta = "".join(f"<span>{escape(k)}: <b>{escape(v)}</b></span>" for k, v in items)
    message = f"<p class='message'>{escape(report.message)}</p>" if report.message else ""
    return (
        f"<header><h1>{escape(heading)} <span class='badge {status}'>{status}</span></h1>"
        f"<div class='meta'>{meta}</div>{message}</header>"
    )


def _table(heading: str, features: Sequence[FeatureDrift]) -> str:
    head = "".join(
        f"<th>{h}</th>"
        for h in ("Column", "Kind", "Test", "Statistic", "Threshold", "p-value", "PSI", "Verdict")
    )
    rows = []
    for f in features:
        verdict = "drift" if f.drifted else "ok"
        cells = [escape(f.name), escape(f.kind), escape(f.test)]
        numbers = [_number(f.statistic), _number(f.threshold), _number(f.p_value), _number(f.psi)]
        rows.append(
            "<tr>"
            + "".join(f"<td>{c}</td>" for c in cells)
            + "".join(f"<td class='num'>{n}</td>" for n in numbers)
            + f"<td><span class='badge {verdict}'>{verdict}</span></td></tr>"
        )
    if not rows:
        rows.append("<tr><td colspan='8' class='message'>no columns tested</td></tr>")
    return f"<h2>{escape(heading)}</h2><table><tr>{head}</tr>{''.join(rows)}</table>"


def _as_tested(
    report: DriftReport, columns: list[str], reference: np.ndarray, current: np.ndarray
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The columns as the report tested them: one-hot groups merged into one categorical
    column (see :func:`~app.modules.monitoring.drift.user_columns`), unless the report names
    the model columns (reports made before that)."""
    if all(f.name in columns for f in report.features):
        return columns, reference, current
    names, _, (ref, cur) = user_columns(
        columns, ["numerical"] * len(columns), np.asarray(reference), np.asarray(current)
    )
    return names, ref, cur


def _card(svg: str) -> str:
    return f"<div class='card'>{svg}</div>"


def _column(data: np.ndarray | None, columns: list[str], f: FeatureDrift) -> np.ndarray | None:
    if data is None or f.name not in columns:
        return None
    return np.asarray(data)[:, columns.index(f.name)]


# --- charts ---------------------------------------------------------------------------------


def _distribution(name: str, kind: str, ref: np.ndarray | None, cur: np.ndarray | None) -> str:
    label = f"{name}: reference vs current"
    if ref is None or cur is None:
        return _svg(label, _note("no sample data"))
    if kind == "categorical":
        return _svg(label, _category_bars(category_labels(ref), category_labels(cur)))
    return _svg(label, _histograms(_finite(ref), _finite(cur)))


def _prediction_chart(
    f: FeatureDrift,
    reference: Mapping[str, np.ndarray] | None,
    current: Mapping[str, np.ndarray] | None,
) -> str:
    values = prediction_values(reference, current) if reference and current else None
    if values is None:
        return _svg("prediction: statistic vs threshold", _statistic_bars(f))
    kind, ref, cur = values
    return _distribution(f.name, kind, ref, cur)


def _histograms(ref: np.ndarray, cur: np.ndarray) -> str:
    if not len(ref) or not len(cur):
        return _note("no finite values")
    lo, hi = float(min(ref.min(), cur.min())), float(max(ref.max(), cur.max()))
    if lo == hi:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, BINS + 1)
    shares = [np.histogram(side, edges)[0] / len(side) for side in (ref, cur)]
    top = float(max(s.max() for s in shares)) or 1.0
    width = (WIDTH - LEFT - RIGHT) / BINS
    bars = [
        _rect(LEFT + i * width + 0.5, share / top, width - 1, colour, 0.55)
        for values, colour in zip(shares, (REFERENCE_COLOUR, CURRENT_COLOUR), strict=True)
        for i, share in enumerate(values)
    ]
    ticks = [
        (LEFT, _number(lo), "start"),
        ((LEFT + WIDTH - RIGHT) / 2, _number((lo + hi) / 2), "middle"),
        (WIDTH - RIGHT, _number(hi), "end"),
    ]
    return _axes(_percent(top), ticks) + "".join(bars) + _legend()


def _category_bars(ref: np.ndarray, cur: np.ndarray) -> str:
    if not len(ref) or not len(cur):
        return _note("no values")
    labels = np.union1d(ref, cur)
    shares = [
        np.bincount(np.searchsorted(labels, side), minlength=len(labels)) / len(side)
        for side in (ref, cur)
    ]
    order = sorted(range(len(labels)), key=lambda i: (-(shares[0][i] + shares[1][i]), labels[i]))
    shown = order[:MAX_CATEGORIES]
    top = float(max(shares[0][shown].max(), shares[1][shown].max())) or 1.0
    slot = (WIDTH - LEFT - RIGHT) / len(shown)
    bar = min(slot * 0.4, 28.0)
    parts = []
    ticks: list[Tick] = []
    for pos, i in enumerate(shown):
        x = LEFT + pos * slot + slot / 2
        parts.append(_rect(x - bar, shares[0][i] / top, bar - 0.5, REFERENCE_COLOUR, 0.9))
        parts.append(_rect(x + 0.5, shares[1][i] / top, bar - 0.5, CURRENT_COLOUR, 0.9))
        text = str(labels[i])
        ticks.append((x, text if len(text) <= 8 else text[:7] + "…", "middle"))
    if len(order) > len(shown):
        parts.append(_text(WIDTH - RIGHT, 32, f"+{len(order) - len(shown)} more", "end"))
    return _axes(_percent(top), ticks) + "".join(parts) + _legend()


def _statistic_bars(f: FeatureDrift) -> str:
    top = max(f.statistic, f.threshold) * 1.2 or 1.0
    colour = ERROR_COLOUR if f.drifted else LATENCY_COLOUR
    bars = [
        _rect(LEFT + 40, f.statistic / top, 80, colour, 0.9),
        _rect(LEFT + 180, f.threshold / top, 80, "#9aa5b1", 0.9),
    ]
    ticks = [(LEFT + 80, f"{f.test} statistic", "middle"), (LEFT + 220, "threshold", "middle")]
    return _axes(_number(top), ticks) + "".join(bars)


def _line_chart(label: str, series: Series, colour: str, fmt: Callable[[float], str]) -> str:
    points = sorted(series, key=lambda p: p[0])
    values = [v for _, v in points if v is not None and np.isfinite(v)]
    if not values:
        return _svg(label, _note("no data"))
    start, end = points[0][0], points[-1][0]
    span = (end - start).total_seconds() or 1.0
    top = max(values) * 1.1 or 1.0
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def xy(t: datetime, v: float) -> str:
        x = LEFT + (t - start).total_seconds() / span * plot_w
        return f"{x:.1f},{TOP + plot_h - v / top * plot_h:.1f}"

    segments: list[list[str]] = [[]]
    for t, v in points:
        if v is None or not np.isfinite(v):
            segments.append([])
        else:
            segments[-1].append(xy(t, v))
    shapes = []
    for segment in filter(None, segments):
        if len(segment) == 1:
            x, y = segment[0].split(",")
            shapes.append(f'<circle cx="{x}" cy="{y}" r="2.5" fill="{colour}"/>')
        else:
            shapes.append(
                f'<polyline points="{" ".join(segment)}" fill="none" stroke="{colour}"'
                ' stroke-width="2" stroke-linejoin="round"/>'
            )
    fmt_time = time_format(span)
    ticks = [
        (LEFT, start.strftime(fmt_time), "start"),
        (WIDTH - RIGHT, end.strftime(fmt_time), "end"),
    ]
    return _svg(label, _axes(fmt(top), ticks) + "".join(shapes))


# --- drawing --------------------------------------------------------------------------------


def _svg(label: str, body: str) -> str:
    text = escape(label)
    return (
        f'<svg class="chart" role="img" aria-label="{text}" width="{WIDTH}" height="{HEIGHT}"'
        f' viewBox="0 0 {WIDTH} {HEIGHT}"><title>{text}</title>'
        f'<text class="title" x="8" y="16">{text}</text>{body}</svg>'
    )


def _axes(top_label: str, ticks: Sequence[Tick]) -> str:
    bottom = HEIGHT - BOTTOM
    lines = [
        f'<line x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH - RIGHT}" y2="{y:.1f}" stroke="#e4e7eb"/>'
        for y in (TOP, (TOP + bottom) / 2)
    ]
    lines.append(
        f'<line x1="{LEFT}" y1="{bottom}" x2="{WIDTH - RIGHT}" y2="{bottom}" stroke="#9aa5b1"/>'
    )
    lines.append(_text(LEFT - 4, TOP + 4, top_label, "end"))
    lines.append(_text(LEFT - 4, bottom + 4, "0", "end"))
    for x, text, anchor in ticks:
        lines.append(_text(x, bottom + 14, text, anchor))
    return "".join(lines)


def _rect(x: float, height: float, width: float, colour: str, opacity: float) -> str:
    plot_h = HEIGHT - TOP - BOTTOM
    h = max(height, 0.0) * plot_h
    return (
        f'<rect x="{x:.1f}" y="{HEIGHT - BOTTOM - h:.1f}" width="{max(width, 0.5):.1f}"'
        f' height="{h:.1f}" fill="{colour}" fill-opacity="{opacity}"/>'
    )


def _legend() -> str:
    parts = []
    entries = ((REFERENCE_COLOUR, "reference"), (CURRENT_COLOUR, "current"))
    for i, (colour, text) in enumerate(entries):
        x = 8 + i * 86
        parts.append(f'<rect x="{x}" y="23" width="10" height="10" fill="{colour}"/>')
        parts.append(_text(x + 14, 32, text, "start"))
    return "".join(parts)


def _text(x: float, y: float, text: str, anchor: str) -> str:
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}">{escape(text)}</text>'


def _note(text: str) -> str:
    return _text(WIDTH / 2, HEIGHT / 2, text, "middle")


# --- numbers --------------------------------------------------------------------------------


def _finite(values: np.ndarray) -> np.ndarray:
    column = np.asarray(values, dtype=np.float64).ravel()
    return column[np.isfinite(column)]


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _percent(value: float) -> str:
    return f"{value * 100:.3g}%"


def _ms(value: float) -> str:
    return f"{value:.3g} ms"
