"""Lengths of time and time-axis labels the way a person reads them."""

from __future__ import annotations

__all__ = ["duration", "time_format"]


def duration(seconds: float) -> str:
    """A length of time as a person says it: ``0.25 s``, ``3.4 s``, ``45 s``, ``5 minutes``,
    ``1 h 30 min``, ``2 days``; at most two significant figures below a minute, and whole units
    (or two of them) above."""
    if seconds < 60:
        return f"{seconds:.2g} s" if seconds < 10 else f"{round(seconds):d} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return "1 minute" if minutes == 1 else f"{minutes} minutes"
    hours, rest = divmod(minutes, 60)
    if hours < 24:
        whole = "1 hour" if hours == 1 else f"{hours} hours"
        return whole if rest == 0 else f"{hours} h {rest} min"
    days, hours = divmod(hours, 24)
    whole = "1 day" if days == 1 else f"{days} days"
    return whole if hours == 0 else f"{days} d {hours} h"


def time_format(span_s: float) -> str:
    """Time-axis labels to the second when the axis spans under 10 minutes, to the minute
    within a day, with the date beyond."""
    if span_s < 600:
        return "%H:%M:%S"
    if span_s < 86400:
        return "%H:%M"
    return "%Y-%m-%d %H:%M"
