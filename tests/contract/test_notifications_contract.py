"""The notifications behaviour suite under all three transports.

``direct``: the platform in this process. ``loopback``: the same, with every call making a msgpack
round trip. ``http``: one `quarry serve` hosting notifications, reached over RPC.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from app.bootstrap import Platform
from app.kernel import calls
from app.kernel.codec import loopback
from app.kernel.rpc import RemoteModule
from app.kernel.settings import Settings
from app.modules.notifications.settings import NotificationsSettings
from contracts import notifications as notifications_contract
from contracts.notifications import NotificationsService
from tests.contract.notifications_behaviour import NotificationsBehaviour
from tests.fakes.server import Server

TOKEN = "notifications-contract-token"
LOOPBACK_ONLY = "127.0.0.1/32"


@pytest.fixture
async def platform(tmp_path: Path) -> AsyncIterator[Platform]:
    settings = Settings(data_dir=tmp_path, modules=("notifications",)).with_module(
        NotificationsSettings(webhook_hosts=(LOOPBACK_ONLY,))
    )
    async with Platform(settings) as started:
        yield started


class TestNotificationsInProcess(NotificationsBehaviour):
    @pytest.fixture
    def notifications(self, platform: Platform) -> NotificationsService:
        return platform.client("notifications", caller="tests")


class TestNotificationsOverLoopback(NotificationsBehaviour):
    @pytest.fixture
    def notifications(self, platform: Platform) -> NotificationsService:
        wire = loopback(NotificationsService, platform.client("notifications"))
        return calls.bind(NotificationsService, wire, module="notifications", caller="tests")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    started = Server(
        tmp_path_factory.mktemp("notifications-server") / "data",
        env={
            "QUARRY_SERVICE_TOKEN": TOKEN,
            "QUARRY_MODULES": "notifications",
            "QUARRY_WEBHOOK_HOSTS": LOOPBACK_ONLY,
        },
    ).start()
    yield started
    started.stop()


@pytest.mark.slow
class TestNotificationsOverHttp(NotificationsBehaviour):
    @pytest.fixture
    async def notifications(self, server: Server) -> AsyncIterator[NotificationsService]:
        remote = RemoteModule(
            "notifications",
            server.url,
            NotificationsService,
            notifications_contract.VERSION,
            token=TOKEN,
        )
        yield calls.bind(
            NotificationsService,
            remote.proxy(),
            module="notifications",
            caller="tests",
            placement="remote",
        )
        await remote.aclose()
