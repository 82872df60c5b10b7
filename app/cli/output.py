"""How client commands print answers: a table for people, JSON (``--json``) for programs."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import msgspec

__all__ = ["Column", "plain", "print_json", "print_record", "print_table"]

Column = tuple[str, Callable[[Any], object]]
"""A table column: its heading and how to read its cell from one item."""

_MAX_CELL = 48


def plain(value: Any) -> Any:
    """``value`` (a Struct, a list of them, ...) as JSON-ready builtins."""
    return msgspec.to_builtins(value)


def print_json(value: Any) -> None:
    """``value`` as indented JSON on stdout."""
    print(json.dumps(plain(value), indent=2, default=str))


def print_table(items: Sequence[Any], columns: Sequence[Column], *, empty: str) -> None:
    """``items`` as aligned columns under their headings; ``empty`` when there are none."""
    if not items:
        print(empty)
        return
    rows = [[heading.upper() for heading, _ in columns]]
    rows += [[_cell(read(item)) for _, read in columns] for item in items]
    widths = [max(len(row[i]) for row in rows) for i in range(len(columns))]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


def print_record(fields: Mapping[str, object]) -> None:
    """One thing as ``name: value`` lines."""
    width = max((len(name) for name in fields), default=0)
    for name, value in fields.items():
        print(f"{name + ':':<{width + 1}} {_cell(value, limit=None)}")


def _cell(value: object, *, limit: int | None = _MAX_CELL) -> str:
    if value is None or value in ({}, []):
        text = "-"
    elif isinstance(value, datetime):
        text = value.strftime("%Y-%m-%d %H:%M:%S")
    elif isinstance(value, Mapping):
        text = ", ".join(f"{k}={v}" for k, v in value.items())
    elif isinstance(value, list | tuple):
        text = ", ".join(map(str, value))
    elif isinstance(value, float):
        text = f"{value:.4g}"
    else:
        text = str(value)
    if limit is not None and len(text) > limit:
        text = text[: limit - 3] + "..."
    return text
