"""The inference behaviour suite under all three transports.

``direct``: the platform in this process. ``loopback``: the same, with every call making a msgpack
round trip. ``http``: one `quarry serve --modules registry,inference` process reached over RPC.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from app.bootstrap import Platform
from app.kernel import calls
from app.kernel.codec import loopback
from app.kernel.rpc import RemoteModule
from app.kernel.settings import Settings
from contracts import inference as inference_contract
from contracts import registry as registry_contract
from contracts.inference import InferenceService
from contracts.registry import RegistryService
from tests.contract.inference_behaviour import InferenceBehaviour
from tests.fakes.server import Server

TOKEN = "inference-contract-token"


@pytest.fixture
async def platform(tmp_path: Path) -> AsyncIterator[Platform]:
    settings = Settings(data_dir=tmp_path, events_poll_s=0.05)
    async with Platform(settings) as started:
        yield started


class TestInferenceInProcess(InferenceBehaviour):
    @pytest.fixture
    def registry(self, platform: Platform) -> RegistryService:
        return platform.client("registry", caller="tests")

    @pytest.fixture
    def inference(self, platform: Platform) -> InferenceService:
        return platform.client("inference", caller="tests")


class TestInferenceOverLoopback(InferenceBehaviour):
    @pytest.fixture
    def registry(self, platform: Platform) -> RegistryService:
        return platform.client("registry", caller="tests")

    @pytest.fixture
    def inference(self, platform: Platform) -> InferenceService:
        wire = loopback(InferenceService, platform.client("inference"))
        return calls.bind(InferenceService, wire, module="inference", caller="tests")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    started = Server(
        tmp_path_factory.mktemp("inference-server") / "data",
        env={"QUARRY_SERVICE_TOKEN": TOKEN, "QUARRY_MODULES": "registry,inference"},
    ).start()
    yield started
    started.stop()


async def _remote(server: Server, name: str, contract: Any) -> RemoteModule:
    service = getattr(contract, f"{name.capitalize()}Service")
    return RemoteModule(name, server.url, service, contract.VERSION, token=TOKEN)


@pytest.mark.slow
class TestInferenceOverHttp(InferenceBehaviour):
    @pytest.fixture
    async def registry(self, server: Server) -> AsyncIterator[RegistryService]:
        remote = await _remote(server, "registry", registry_contract)
        yield calls.bind(
            RegistryService, remote.proxy(), module="registry", caller="tests", placement="remote"
        )
        await remote.aclose()

    @pytest.fixture
    async def inference(self, server: Server) -> AsyncIterator[InferenceService]:
        remote = await _remote(server, "inference", inference_contract)
        yield calls.bind(
            InferenceService, remote.proxy(), module="inference", caller="tests", placement="remote"
        )
        await remote.aclose()
