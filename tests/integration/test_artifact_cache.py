"""An inference host keeps fetched artifacts in ``<data_dir>/artifact-cache``, by sha256.

The registry runs in its own platform here and the inference service talks to it through a
wrapper that counts artifact fetches, as an inference host reaches a remote registry.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from app.bootstrap import Platform, configure
from app.kernel.settings import Settings, load_settings
from app.modules.inference.artifact_cache import ArtifactCache, cache_for
from app.modules.inference.service import LocalInferenceService
from app.modules.inference.settings import InferenceSettings
from contracts.common import Tensor
from contracts.inference import LoadModel, Predict, UnloadModel
from contracts.registry import ArtifactChunk, FetchArtifact, RegisterVersion
from tests.fakes.models import linear_onnx, linear_weights

ROWS = np.asarray([[1.0, 2.0, 3.0]], dtype=np.float32)
LOG = logging.getLogger("tests.artifact_cache")


class CountingRegistry:
    """A registry client that counts ``fetch_artifact`` calls and passes everything on."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.fetches: list[str] = []

    def fetch_artifact(self, request: FetchArtifact) -> AsyncIterator[ArtifactChunk]:
        self.fetches.append(request.ref)
        return self.inner.fetch_artifact(request)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.fixture
async def registry(tmp_path: Path) -> AsyncIterator[CountingRegistry]:
    settings = Settings(data_dir=tmp_path / "registry-host", modules=("registry",))
    async with Platform(settings) as platform:
        client = platform.client("registry", caller="tests")
        for seed in (0, 1, 2):
            await client.register_version(
                RegisterVersion(name="lin", artifact=linear_onnx(seed=seed))
            )
        yield CountingRegistry(client)


def inference_settings(data_dir: Path, **changes: Any) -> Settings:
    """An inference-only host whose registry lives elsewhere."""
    return Settings(
        data_dir=data_dir,
        modules=("inference",),
        remotes={"registry": "http://registry.invalid:8000"},
    ).with_module(InferenceSettings(threads=1, **changes))


@pytest.fixture
def host(tmp_path: Path) -> Path:
    return tmp_path / "gpu-host"


def cached(host: Path) -> list[Path]:
    folder = host / "artifact-cache"
    return sorted(folder.iterdir()) if folder.is_dir() else []


async def predict(service: LocalInferenceService, ref: str) -> np.ndarray:
    answer = await service.predict(Predict(model=ref, inputs={"x": Tensor.from_numpy(ROWS)}))
    return answer.outputs["y"].to_numpy()


def expected(seed: int) -> np.ndarray:
    weight, bias = linear_weights(seed=seed)
    return ROWS @ weight + bias


async def test_a_reload_reads_the_local_copy_not_the_registry(
    registry: CountingRegistry, host: Path
) -> None:
    service = LocalInferenceService(registry=registry, settings=inference_settings(host))
    try:
        await service.load_model(LoadModel(model="lin:1"))
        assert registry.fetches == ["lin:1"]
        digest = hashlib.sha256(linear_onnx(seed=0)).hexdigest()
        assert [p.name for p in cached(host)] == [digest]

        await service.unload_model(UnloadModel(model="lin:1"))
        np.testing.assert_allclose(await predict(service, "lin:1"), expected(0), rtol=1e-5)
        assert registry.fetches == ["lin:1"]
    finally:
        await service.close()

    restarted = LocalInferenceService(registry=registry, settings=inference_settings(host))
    try:
        np.testing.assert_allclose(await predict(restarted, "lin:1"), expected(0), rtol=1e-5)
    finally:
        await restarted.close()
    assert registry.fetches == ["lin:1"]


async def test_a_corrupt_copy_is_dropped_and_fetched_again(
    registry: CountingRegistry, host: Path
) -> None:
    first = LocalInferenceService(registry=registry, settings=inference_settings(host))
    try:
        await first.load_model(LoadModel(model="lin:2"))
    finally:
        await first.close()
    (copy,) = cached(host)
    copy.write_bytes(copy.read_bytes()[:-10] + b"0123456789")

    second = LocalInferenceService(registry=registry, settings=inference_settings(host))
    try:
        np.testing.assert_allclose(await predict(second, "lin:2"), expected(1), rtol=1e-5)
    finally:
        await second.close()

    assert registry.fetches == ["lin:2", "lin:2"]
    assert copy.read_bytes() == linear_onnx(seed=1)


async def test_the_cache_stays_under_its_bound_dropping_the_least_recently_used(
    registry: CountingRegistry, host: Path
) -> None:
    size = len(linear_onnx(seed=0))
    settings = inference_settings(host, artifact_cache_bytes=2 * size + size // 2)
    service = LocalInferenceService(registry=registry, settings=settings)
    try:
        for version, stamp in ((1, 1_000), (2, 2_000)):
            await service.load_model(LoadModel(model=f"lin:{version}"))
            for copy in cached(host):  # distinct, ordered use times (coarse clocks tie)
                if copy.stat().st_mtime > stamp:
                    os.utime(copy, (stamp, stamp))
        await service.unload_model(UnloadModel(model="lin:1"))
        await service.load_model(LoadModel(model="lin:1"))  # a hit: lin:1 now most recent
        await service.load_model(LoadModel(model="lin:3"))
    finally:
        await service.close()

    kept = {p.name for p in cached(host)}
    assert sum(p.stat().st_size for p in cached(host)) <= 2 * size + size // 2
    assert kept == {hashlib.sha256(linear_onnx(seed=s)).hexdigest() for s in (0, 2)}
    assert registry.fetches == ["lin:1", "lin:2", "lin:3"]


def test_artifacts_larger_than_the_whole_cache_are_not_kept(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path, max_bytes=10, logger=LOG)
    data = b"x" * 11
    digest = hashlib.sha256(data).hexdigest()

    cache.write(digest, data)

    assert cache.read(digest) is None
    assert list(tmp_path.iterdir()) == []


def test_a_host_with_the_registry_on_a_local_folder_keeps_no_copies(tmp_path: Path) -> None:
    assert cache_for(Settings(data_dir=tmp_path), LOG) is None
    assert cache_for(inference_settings(tmp_path, artifact_cache_bytes=0), LOG) is None
    shared = Settings(data_dir=tmp_path, artifacts_url="s3://bucket/models")
    assert cache_for(shared, LOG) is not None


def test_the_bound_is_read_from_the_environment(tmp_path: Path) -> None:
    env = {"QUARRY_DATA_DIR": str(tmp_path), "QUARRY_ARTIFACT_CACHE_BYTES": "1048576"}
    loaded = configure(load_settings(env, config_file=os.devnull))
    assert loaded.module_config(InferenceSettings).artifact_cache_bytes == 1 << 20
    assert configure(Settings()).module_config(InferenceSettings).artifact_cache_bytes == 10 << 30
