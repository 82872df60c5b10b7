"""Small line charts drawn as inline SVG on the server (no chart library, nothing fetched)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from markupsafe import Markup, escape

__all__ = ["bar_chart", "line_chart", "lines_chart", "sparkline"]

_WIDTH, _HEIGHT, _PAD = 480, 180, 36


def line_chart(
    values: Sequence[float],
    *,
    label: str,
    y_max: float | None = None,
    x_label: str = "step",
) -> Markup:
    """``values`` (one per step) as a polyline, labelled for screen readers by ``label``."""
    if not values:
        return Markup("")
    top = y_max if y_max is not None else max(*values, 1e-12)
    bottom = min(0.0, *values)
    span = (top - bottom) or 1.0
    last = max(len(values) - 1, 1)
    inner_w, inner_h = _WIDTH - 2 * _PAD, _HEIGHT - 2 * _PAD
    points = " ".join(
        f"{_PAD + inner_w * i / last:.1f},{_PAD + inner_h * (1 - (v - bottom) / span):.1f}"
        for i, v in enumerate(values)
    )
    title = escape(label)
    # every interpolated value is a number or escaped text
    return Markup(  # noqa: S704
        f'<svg class="chart" role="img" aria-label="{title}" viewBox="0 0 {_WIDTH} {_HEIGHT}"'
        f' width="{_WIDTH}" height="{_HEIGHT}">'
        f"<title>{title}</title>"
        f'<line x1="{_PAD}" y1="{_HEIGHT - _PAD}" x2="{_WIDTH - _PAD}" y2="{_HEIGHT - _PAD}"'
        ' stroke="#767676"/>'
        f'<line x1="{_PAD}" y1="{_PAD}" x2="{_PAD}" y2="{_HEIGHT - _PAD}" stroke="#767676"/>'
        f'<text x="4" y="{_PAD + 4}">{_short(top)}</text>'
        f'<text x="4" y="{_HEIGHT - _PAD}">{_short(bottom)}</text>'
        f'<text x="{_WIDTH - _PAD}" y="{_HEIGHT - 8}" text-anchor="end">{escape(x_label)}'
        f" {len(values) - 1}</text>"
        f'<polyline points="{points}"/></svg>'
    )


def _short(value: float) -> str:
    return f"{value:.3g}"


_SERIES_CLASSES = 5
"""Line styles (colour and dash, in ``console.css``) told apart in one chart; more repeat."""


def _segments(values: Sequence[float | None]) -> list[list[tuple[int, float]]]:
    """Runs of consecutive known values (``None`` breaks a line: a step without data)."""
    runs: list[list[tuple[int, float]]] = [[]]
    for i, v in enumerate(values):
        if v is None:
            if runs[-1]:
                runs.append([])
        else:
            runs[-1].append((i, v))
    return [r for r in runs if r]


def lines_chart(
    series: Mapping[str, Sequence[float | None]],
    *,
    label: str,
    start: str = "",
    end: str = "",
    unit: str = "",
) -> Markup:
    """Several lines over the same steps (``None``: no data in a step), with a legend; ``start``
    and ``end`` label the time axis, ``unit`` the values."""
    known = [v for values in series.values() for v in values if v is not None]
    if not known:
        return Markup("")
    steps = max(len(values) for values in series.values())
    top, bottom = max(*known, 0.0), min(0.0, *known)
    if top <= bottom:  # nothing but zeros (no error at all): a flat line along the bottom
        top = bottom + 1.0
    span = (top - bottom) or 1.0
    last = max(steps - 1, 1)
    inner_w, inner_h = _WIDTH - 2 * _PAD, _HEIGHT - 2 * _PAD
    parts, legend = [], []
    for n, (name, values) in enumerate(series.items()):
        style = f"s{n % _SERIES_CLASSES}"
        for run in _segments(values):
            if len(run) == 1:  # a lone step: a dot
                i, v = run[0]
                x, y = _PAD + inner_w * i / last, _PAD + inner_h * (1 - (v - bottom) / span)
                parts.append(f'<circle class="{style}" cx="{x:.1f}" cy="{y:.1f}" r="2.5"/>')
                continue
            points = " ".join(
                f"{_PAD + inner_w * i / last:.1f},{_PAD + inner_h * (1 - (v - bottom) / span):.1f}"
                for i, v in run
            )
            parts.append(f'<polyline class="{style}" points="{points}"/>')
        x = _PAD + n * 110
        legend.append(
            f'<line class="{style}" x1="{x}" y1="12" x2="{x + 18}" y2="12"/>'
            f'<text x="{x + 22}" y="16">{escape(name)}</text>'
        )
    title = escape(label)
    suffix = f" {escape(unit)}" if unit else ""
    # every interpolated value is a number or escaped text
    return Markup(  # noqa: S704
        f'<svg class="chart" role="img" aria-label="{title}" viewBox="0 0 {_WIDTH} {_HEIGHT}"'
        f' width="{_WIDTH}" height="{_HEIGHT}">'
        f"<title>{title}</title>"
        f'<line x1="{_PAD}" y1="{_HEIGHT - _PAD}" x2="{_WIDTH - _PAD}" y2="{_HEIGHT - _PAD}"'
        ' stroke="#767676"/>'
        f'<line x1="{_PAD}" y1="{_PAD}" x2="{_PAD}" y2="{_HEIGHT - _PAD}" stroke="#767676"/>'
        f'<text x="4" y="{_PAD + 4}">{_short(top)}{suffix}</text>'
        f'<text x="4" y="{_HEIGHT - _PAD}">{_short(bottom)}</text>'
        f'<text x="{_PAD}" y="{_HEIGHT - 8}">{escape(start)}</text>'
        f'<text x="{_WIDTH - _PAD}" y="{_HEIGHT - 8}" text-anchor="end">{escape(end)}</text>'
        f"{''.join(legend)}{''.join(parts)}</svg>"
    )


_SPARK_W, _SPARK_H = 120, 28


def sparkline(values: Sequence[float | None], *, label: str) -> Markup:
    """A small line without axes (``None``: no data in a step); ``label`` says what it shows
    and its latest figure, for screen readers and as a tooltip."""
    known = [v for v in values if v is not None]
    title = escape(label)
    if not known:
        return Markup(  # noqa: S704 - escaped text only
            f'<svg class="spark" role="img" aria-label="{title}" viewBox="0 0 {_SPARK_W}'
            f' {_SPARK_H}" width="{_SPARK_W}" height="{_SPARK_H}"><title>{title}</title>'
            f'<line class="empty" x1="0" y1="{_SPARK_H - 2}" x2="{_SPARK_W}"'
            f' y2="{_SPARK_H - 2}"/></svg>'
        )
    top = max(*known, 1e-12)
    last = max(len(values) - 1, 1)
    lines = []
    for run in _segments(values):
        xy = [((_SPARK_W - 2) * i / last + 1, 2 + (_SPARK_H - 4) * (1 - v / top)) for i, v in run]
        if len(xy) == 1:  # a lone step: a dot
            lines.append(f'<circle cx="{xy[0][0]:.1f}" cy="{xy[0][1]:.1f}" r="1.5"/>')
            continue
        points = " ".join(f"{x:.1f},{y:.1f}" for x, y in xy)
        lines.append(f'<polyline points="{points}"/>')
    return Markup(  # noqa: S704 - numbers and escaped text only
        f'<svg class="spark" role="img" aria-label="{title}" viewBox="0 0 {_SPARK_W} {_SPARK_H}"'
        f' width="{_SPARK_W}" height="{_SPARK_H}"><title>{title}</title>{"".join(lines)}</svg>'
    )


def bar_chart(shares: dict[str, float], *, label: str) -> Markup:
    """One horizontal bar per key, as long as its value against the largest, value written."""
    if not shares:
        return Markup("")
    top = max(*shares.values(), 1e-12)
    row, gap, left = 18, 6, 90
    height = len(shares) * (row + gap) + gap
    bars = []
    for n, (name, value) in enumerate(shares.items()):
        y = gap + n * (row + gap)
        width = max(0.0, (_WIDTH - left - 70) * value / top)
        bars.append(
            f'<text x="{left - 6}" y="{y + 13}" text-anchor="end">{escape(name[:14])}</text>'
            f'<rect x="{left}" y="{y}" width="{width:.1f}" height="{row}"/>'
            f'<text x="{left + width + 6:.1f}" y="{y + 13}">{_short(value)}</text>'
        )
    title = escape(label)
    return Markup(  # noqa: S704 - numbers and escaped text only
        f'<svg class="chart bars" role="img" aria-label="{title}" viewBox="0 0 {_WIDTH} {height}"'
        f' width="{_WIDTH}" height="{height}"><title>{title}</title>{"".join(bars)}</svg>'
    )
