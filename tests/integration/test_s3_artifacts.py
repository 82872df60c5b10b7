"""`QUARRY_ARTIFACTS_URL=s3://bucket/prefix` against a local S3-compatible server (moto).

The server runs in a thread of the test process; each test gets its own bucket.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from app.bootstrap import Platform
from app.kernel.settings import ConfigError, Settings
from app.modules.registry.s3 import S3ArtifactStore
from contracts.common import Tensor
from contracts.inference import Predict
from contracts.registry import DeleteVersion, FetchArtifact, RegisterVersion, read_artifact
from tests.fakes.models import linear_onnx, linear_weights

PREFIX = "some/prefix"
ROWS = np.asarray([[1.0, 2.0, 3.0], [0.5, -1.0, 4.0]], dtype=np.float32)


def settings(data_dir: Path, bucket: str, **changes: Any) -> Settings:
    return Settings(data_dir=data_dir, artifacts_url=f"s3://{bucket}/{PREFIX}", **changes)


def keys(s3: Any, bucket: str) -> list[str]:
    listing = s3.list_objects_v2(Bucket=bucket)
    return sorted(entry["Key"] for entry in listing.get("Contents", ()))


def key_of(data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    return f"{PREFIX}/{digest[:2]}/{digest}"


async def test_versions_keep_their_bytes_in_the_bucket_by_sha256(
    tmp_path: Path, s3: Any, bucket: str
) -> None:
    data = linear_onnx(seed=0)
    async with Platform(settings(tmp_path, bucket)) as platform:
        registry = platform.client("registry", caller="tests")
        await registry.register_version(RegisterVersion(name="lin", artifact=data))

        assert keys(s3, bucket) == [key_of(data)]
        assert s3.get_object(Bucket=bucket, Key=key_of(data))["Body"].read() == data
        _, fetched = await read_artifact(
            registry.fetch_artifact(FetchArtifact(ref="lin:1", chunk_size=1000))
        )
        assert fetched == data
        assert not (tmp_path / "artifacts").exists()


async def test_shared_bytes_are_one_object_until_the_last_version_goes(
    tmp_path: Path, s3: Any, bucket: str
) -> None:
    data = linear_onnx(seed=0)
    async with Platform(settings(tmp_path, bucket)) as platform:
        registry = platform.client("registry", caller="tests")
        await registry.register_version(RegisterVersion(name="a", artifact=data))
        await registry.register_version(RegisterVersion(name="b", artifact=data))
        assert keys(s3, bucket) == [key_of(data)]

        first = await registry.delete_version(DeleteVersion(name="a", version=1))
        assert not first.artifact_deleted
        assert keys(s3, bucket) == [key_of(data)]

        last = await registry.delete_version(DeleteVersion(name="b", version=1))
        assert last.artifact_deleted
        assert keys(s3, bucket) == []


async def test_predict_loads_through_the_registry_from_the_bucket(
    tmp_path: Path, bucket: str
) -> None:
    async with Platform(settings(tmp_path, bucket)) as platform:
        await platform.client("registry", caller="tests").register_version(
            RegisterVersion(name="lin", artifact=linear_onnx(seed=1))
        )
        answer = await platform.client("inference", caller="tests").predict(
            Predict(model="lin", inputs={"x": Tensor.from_numpy(ROWS)})
        )

    weight, bias = linear_weights(seed=1)
    np.testing.assert_allclose(answer.outputs["y"].to_numpy(), ROWS @ weight + bias, rtol=1e-5)


async def test_another_host_fetches_the_same_artifact(tmp_path: Path, bucket: str) -> None:
    data = linear_onnx(seed=2)
    registry_db = f"sqlite:///{tmp_path / 'shared-registry.db'}"
    first = settings(tmp_path / "one", bucket, database_urls={"registry": registry_db})
    second = settings(tmp_path / "two", bucket, database_urls={"registry": registry_db})
    async with Platform(first) as platform:
        await platform.client("registry", caller="tests").register_version(
            RegisterVersion(name="lin", artifact=data)
        )

    async with Platform(second) as platform:
        _, fetched = await read_artifact(
            platform.client("registry", caller="tests").fetch_artifact(FetchArtifact(ref="lin"))
        )
        answer = await platform.client("inference", caller="tests").predict(
            Predict(model="lin:1", inputs={"x": Tensor.from_numpy(ROWS)})
        )

    assert fetched == data
    assert answer.version == 1
    assert not (tmp_path / "two" / "artifacts").exists()


async def test_a_missing_bucket_stops_the_start_naming_the_variable(
    tmp_path: Path, s3: Any
) -> None:
    with pytest.raises(ConfigError, match=r"QUARRY_ARTIFACTS_URL.*'no-such-bucket' does not exist"):
        async with Platform(settings(tmp_path, "no-such-bucket")):
            pass


def test_big_artifacts_go_up_in_parts_and_come_back_whole(s3: Any, bucket: str) -> None:
    part = 5 << 20  # the smallest part S3 accepts
    data = np.random.default_rng(0).bytes(2 * part + 123)
    digest = hashlib.sha256(data).hexdigest()
    store = S3ArtifactStore(f"s3://{bucket}/{PREFIX}", part_bytes=part)

    assert store.put(digest, data)
    assert not store.put(digest, data)  # already there: nothing uploaded again

    assert s3.head_object(Bucket=bucket, Key=key_of(data))["ContentLength"] == len(data)
    with store.open(digest) as handle:
        chunks = iter(lambda: handle.read(1 << 20), b"")
        assert b"".join(chunks) == data
    assert [d for d, _ in store.blobs()] == [digest]


def test_the_sweep_aborts_abandoned_uploads_under_its_prefix(s3: Any, bucket: str) -> None:
    store = S3ArtifactStore(f"s3://{bucket}/{PREFIX}")
    ours = f"{PREFIX}/ab/{'ab' * 32}"
    s3.create_multipart_upload(Bucket=bucket, Key=ours)
    s3.create_multipart_upload(Bucket=bucket, Key="elsewhere/upload")

    # moto reports every upload as begun in 2010: long abandoned
    assert store.sweep_temporary(3600.0) == 1
    left = s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    assert [upload["Key"] for upload in left] == ["elsewhere/upload"]


def test_missing_blobs_read_as_absent(bucket: str) -> None:
    store = S3ArtifactStore(f"s3://{bucket}")
    digest = "0" * 64

    assert not store.exists(digest)
    assert not store.delete(digest)
    with pytest.raises(FileNotFoundError):
        store.open(digest)
    assert store.key(digest) == f"00/{digest}"
