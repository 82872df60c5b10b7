"""A ``Literal`` that gains members is a compatible change once the minor version is raised;
one that loses members is not."""

from __future__ import annotations

import copy

from contracts import _schema


def _with_signals(snapshot: dict, signals: list[str], minor: int) -> dict:
    changed = copy.deepcopy(snapshot)
    changed["components"]["PutAlert"]["properties"]["signal"]["enum"] = signals
    changed["version"][1] = minor
    return changed


def test_new_literal_members_need_only_the_minor_version_raised() -> None:
    old = _schema.snapshot("monitoring")
    signals = old["components"]["PutAlert"]["properties"]["signal"]["enum"]
    minor = old["version"][1]
    wider = [*signals, "a_new_signal"]

    assert _schema.problems(old, _with_signals(old, wider, minor + 1)) == []
    assert _schema.problems(old, _with_signals(old, wider, minor)) == [
        "PutAlert.signal allows new values (raise the minor version)"
    ]
    assert _schema.problems(old, _with_signals(old, signals[1:], minor + 1)) == [
        "PutAlert.signal changed type"
    ]
