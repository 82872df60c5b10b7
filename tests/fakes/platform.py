"""A platform view hosting no module, for apps built around test routes."""

from __future__ import annotations

from app.kernel.http.app import ModuleStatus


class BarePlatform:
    """What ``create_http_app`` needs to know of a platform with no module of its own: ready,
    not draining, and no module to report."""

    draining = False

    def readiness(self) -> dict[str, bool]:
        return {}

    def module_statuses(self) -> list[ModuleStatus]:
        return []
