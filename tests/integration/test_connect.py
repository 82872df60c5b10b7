"""`app.connect()` and `app.connect_sync()` give the registry contract in-process."""

from __future__ import annotations

import asyncio
from pathlib import Path

import app
from contracts.common import NotFound
from contracts.registry import (
    FetchArtifact,
    GetVersion,
    RegisterVersion,
    SetAlias,
    read_artifact,
)
from tests.fakes.models import torch_mlp_bytes


async def test_connect_registers_aliases_and_fetches(database_url: str, tmp_path: Path) -> None:
    model = tmp_path / "mlp.onnx"
    model.write_bytes(torch_mlp_bytes())
    async with app.connect(data_dir=tmp_path / "q", database_urls={"registry": database_url}) as q:
        assert q.modules == [
            "registry",
            "features",
            "monitoring",
            "inference",
            "training",
            "notifications",
        ]
        version = await q.registry.register_version(RegisterVersion.from_path("mlp", model))
        await q.registry.set_alias(SetAlias(name="mlp", alias="champion", version=version.version))

        resolved = await q.registry.get_version(GetVersion(ref="mlp@champion"))
        first, data = await read_artifact(q.registry.fetch_artifact(FetchArtifact(ref="mlp")))

    assert resolved.version == version.version == 1
    assert resolved.aliases == ["champion"]
    assert [i.shape for i in resolved.signature.inputs] == [[-1, 8]]
    assert data == model.read_bytes()
    assert first.sha256 == version.sha256


def test_connect_sync_blocks_and_works_under_a_running_loop(
    database_url: str, tmp_path: Path
) -> None:
    async def inside_a_running_loop() -> tuple[int, bytes, str]:
        # Jupyter runs user code while its own loop is running: connect_sync must still work.
        with app.connect_sync(data_dir=tmp_path, database_urls={"registry": database_url}) as q:
            version = q.registry.register_version(
                RegisterVersion(name="sync", artifact=torch_mlp_bytes())
            )
            chunks = list(q.registry.fetch_artifact(FetchArtifact(ref="sync:1", chunk_size=1024)))
            try:
                q.registry.get_version(GetVersion(ref="sync:9"))
            except NotFound as exc:
                missing = exc.code
            return version.version, b"".join(c.data for c in chunks), missing

    number, data, missing = asyncio.run(inside_a_running_loop())

    assert number == 1
    assert data == torch_mlp_bytes()
    assert missing == "not_found"
