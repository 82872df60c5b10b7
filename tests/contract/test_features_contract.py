"""The features behaviour suite under all three transports.

``direct``: the platform in this process. ``loopback``: the same, with every call making a msgpack
round trip. ``http``: one `quarry serve --modules features` process reached over RPC.
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
from contracts import features as features_contract
from contracts.features import FeaturesService
from tests.contract.features_behaviour import FeaturesBehaviour
from tests.fakes.server import Server

TOKEN = "features-contract-token"


@pytest.fixture
async def platform(tmp_path: Path) -> AsyncIterator[Platform]:
    async with Platform(Settings(data_dir=tmp_path, modules=("features",))) as started:
        yield started


class TestFeaturesInProcess(FeaturesBehaviour):
    @pytest.fixture
    def features(self, platform: Platform) -> FeaturesService:
        return platform.client("features", caller="tests")


class TestFeaturesOverLoopback(FeaturesBehaviour):
    @pytest.fixture
    def features(self, platform: Platform) -> FeaturesService:
        wire = loopback(FeaturesService, platform.client("features"))
        return calls.bind(FeaturesService, wire, module="features", caller="tests")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    started = Server(
        tmp_path_factory.mktemp("features-server") / "data",
        env={"QUARRY_SERVICE_TOKEN": TOKEN, "QUARRY_MODULES": "features"},
    ).start()
    yield started
    started.stop()


@pytest.mark.slow
class TestFeaturesOverHttp(FeaturesBehaviour):
    @pytest.fixture
    async def features(self, server: Server) -> AsyncIterator[FeaturesService]:
        remote = RemoteModule(
            "features", server.url, FeaturesService, features_contract.VERSION, token=TOKEN
        )
        yield calls.bind(
            FeaturesService, remote.proxy(), module="features", caller="tests", placement="remote"
        )
        await remote.aclose()
