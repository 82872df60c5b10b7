"""The registry's behaviour suite under the other two transports.

``loopback``: in-process, but every request, answer, streamed item and error makes a msgpack round
trip. ``http``: a real `quarry serve --modules registry` process reached through the RPC client,
as another module (or `app.connect(url=...)`) would reach it; one process serves every test of
the module, which is why the behaviour tests each keep to their own namespace of model names.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from app.kernel import calls
from app.kernel.codec import loopback
from app.kernel.rpc import RemoteModule
from contracts.registry import VERSION, RegistryService
from tests.contract.registry_behaviour import RegistryBehaviour
from tests.contract.test_registry_contract import make_local
from tests.fakes.server import Server

TOKEN = "transport-test-token"


@pytest.fixture
def loopback_registry(tmp_path: Path) -> Iterator[RegistryService]:
    local = make_local(f"sqlite:///{tmp_path / 'registry.db'}", tmp_path)
    wire = loopback(RegistryService, local.service)
    yield calls.bind(RegistryService, wire, module="registry", caller="tests")
    local.db.dispose()


class TestRegistryOverLoopback(RegistryBehaviour):
    """Every behaviour, with a msgpack round trip in between."""

    @pytest.fixture
    def registry(self, loopback_registry: RegistryService) -> RegistryService:
        return loopback_registry


@pytest.fixture(scope="module")
def registry_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for the whole module: the behaviour tests keep to their own model names."""
    server = Server(
        tmp_path_factory.mktemp("registry-server") / "data",
        env={"QUARRY_SERVICE_TOKEN": TOKEN, "QUARRY_MODULES": "registry"},
    ).start()
    yield server
    server.stop()


@pytest.fixture
async def http_registry(registry_server: Server) -> AsyncIterator[RegistryService]:
    """A client per test, made inside that test's event loop."""
    remote = RemoteModule("registry", registry_server.url, RegistryService, VERSION, token=TOKEN)
    yield calls.bind(
        RegistryService, remote.proxy(), module="registry", caller="tests", placement="remote"
    )
    await remote.aclose()


@pytest.mark.slow
class TestRegistryOverHttp(RegistryBehaviour):
    """Every behaviour, against a registry in another process."""

    @pytest.fixture
    def registry(self, http_registry: RegistryService) -> RegistryService:
        return http_registry
