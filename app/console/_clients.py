"""The contracts the console calls, as the composition root bound them (local or remote)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from contracts.common import Unavailable
from contracts.features import FeaturesService
from contracts.inference import InferenceService
from contracts.monitoring import MonitoringService
from contracts.notifications import NotificationsService
from contracts.registry import RegistryService
from contracts.training import TrainingService

__all__ = ["Clients"]


class Clients:
    """Each module's contract client by module name; a module this process cannot reach is
    :class:`~contracts.common.Unavailable` when a page asks for it."""

    def __init__(self, clients: Mapping[str, Any]) -> None:
        self._clients = dict(clients)

    def has(self, module: str) -> bool:
        """Whether ``module`` is reachable from this process."""
        return module in self._clients

    def _get(self, module: str) -> Any:
        try:
            return self._clients[module]
        except KeyError:
            raise Unavailable(
                f"the {module} module is not reachable from this process"
                f" (host it here or set QUARRY_REMOTE_{module.upper()})"
            ) from None

    @property
    def registry(self) -> RegistryService:
        """The registry contract."""
        client: RegistryService = self._get("registry")
        return client

    @property
    def inference(self) -> InferenceService:
        """The inference contract."""
        client: InferenceService = self._get("inference")
        return client

    @property
    def monitoring(self) -> MonitoringService:
        """The monitoring contract."""
        client: MonitoringService = self._get("monitoring")
        return client

    @property
    def training(self) -> TrainingService:
        """The training contract."""
        client: TrainingService = self._get("training")
        return client

    @property
    def features(self) -> FeaturesService:
        """The features contract."""
        client: FeaturesService = self._get("features")
        return client

    @property
    def notifications(self) -> NotificationsService:
        """The notifications contract."""
        client: NotificationsService = self._get("notifications")
        return client
