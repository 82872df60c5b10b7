"""Small line charts drawn as inline SVG on the server (no chart library, nothing fetched)."""

from __future__ import annotations

from collections.abc import Sequence

from markupsafe import Markup, escape

__all__ = ["line_chart"]

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
