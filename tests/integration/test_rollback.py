"""Rollback puts the previous champion back everywhere that follows it, the reason recorded."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from app.bootstrap import Platform, create_app
from app.kernel.settings import Settings
from app.modules.inference.settings import InferenceSettings
from contracts.common import Conflict, Tensor
from contracts.inference import (
    Deployment,
    Predict,
    PromoteRollout,
    PutDeployment,
    Route,
    StartRollout,
)
from contracts.registry import (
    ArchiveVersion,
    GetAlias,
    ListAliasHistory,
    RegisterVersion,
    RollbackAlias,
    SetAlias,
)
from tests.fakes.models import linear_onnx

MODEL = "churn"
ROWS = Tensor.from_numpy(np.ones((1, 3), dtype=np.float32))


def _settings(data_dir: Path) -> Settings:
    return Settings(data_dir=data_dir, modules=("registry", "monitoring", "inference")).with_module(
        InferenceSettings(prediction_log_sample=0.0)
    )


async def _two_versions(platform: Platform) -> None:
    registry = platform.client("registry", caller="tests")
    for seed in (0, 1):
        await registry.register_version(
            RegisterVersion(name=MODEL, artifact=linear_onnx(seed=seed))
        )
    await registry.set_alias(SetAlias(name=MODEL, alias="champion", version=1, reason="first"))


@pytest.fixture
async def platform(tmp_path: Path) -> AsyncIterator[Platform]:
    async with Platform(_settings(tmp_path)) as platform:
        await _two_versions(platform)
        yield platform


async def _served(platform: Platform, ref: str) -> int:
    inference = platform.client("inference", caller="tests")
    return (await inference.predict(Predict(model=ref, inputs={"x": ROWS}))).version


async def test_rollback_after_a_rollout_puts_v1_back_in_the_deployment(platform: Platform) -> None:
    inference = platform.client("inference", caller="tests")
    registry = platform.client("registry", caller="tests")
    route = Route(model=f"{MODEL}@champion", weight=1.0)
    await inference.put_deployment(
        PutDeployment(deployment=Deployment(name="scores", routes=[route]))
    )
    rollout = await inference.start_rollout(
        StartRollout(deployment="scores", candidate=f"{MODEL}:2")
    )
    await inference.promote_rollout(PromoteRollout(id=rollout.id))
    await platform.bus.drain(timeout=10)
    assert (await _served(platform, "scores"), await _served(platform, MODEL)) == (2, 2)

    transport = httpx.ASGITransport(app=create_app(platform, host="127.0.0.1"))
    async with httpx.AsyncClient(transport=transport, base_url="http://q") as http:
        answer = await http.post(
            f"/v1/registry/models/{MODEL}/rollback", json={"reason": "v2 mislabels refunds"}
        )
        assert answer.status_code == 200, answer.text
        change = answer.json()
        assert (change["action"], change["version"], change["previous_version"]) == (
            "rollback",
            1,
            2,
        )
        await platform.bus.drain(timeout=10)

        assert (await _served(platform, "scores"), await _served(platform, MODEL)) == (1, 1)
        history = (await http.get(f"/v1/registry/models/{MODEL}/aliases/champion/history")).json()
        assert [(c["action"], c["version"], c["reason"]) for c in history["items"]] == [
            ("rollback", 1, "v2 mislabels refunds"),
            ("set", 2, ""),
            ("set", 1, "first"),
        ]

        again = await http.post(f"/v1/registry/models/{MODEL}/rollback", json={})
        assert again.status_code == 409  # a rollback is not undone by another one
        assert "no earlier version" in again.json()["error"]
    assert (await registry.get_alias(GetAlias(name=MODEL, alias="champion"))).version == 1


async def test_the_history_pages_newest_first_and_a_deleted_target_is_a_conflict(
    platform: Platform,
) -> None:
    registry = platform.client("registry", caller="tests")
    await registry.register_version(RegisterVersion(name=MODEL, artifact=linear_onnx(seed=2)))
    for version in (2, 3):
        await registry.set_alias(SetAlias(name=MODEL, alias="champion", version=version))
    first = await registry.list_alias_history(ListAliasHistory(name=MODEL, limit=2))
    rest = await registry.list_alias_history(
        ListAliasHistory(name=MODEL, limit=2, cursor=first.next_cursor)
    )
    assert [c.version for c in [*first.items, *rest.items]] == [3, 2, 1]
    assert rest.next_cursor is None

    await registry.archive_version(ArchiveVersion(name=MODEL, version=2))
    with pytest.raises(Conflict, match="archived"):
        await registry.rollback_alias(RollbackAlias(name=MODEL))


def test_the_cli_rolls_the_champion_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from app.cli import main

    async def prepare() -> None:
        async with Platform(_settings(tmp_path)) as platform:
            await _two_versions(platform)
            registry = platform.client("registry", caller="tests")
            await registry.set_alias(SetAlias(name=MODEL, alias="champion", version=2))

    asyncio.run(prepare())
    argv = ["--data-dir", str(tmp_path), "rollback", MODEL, "--reason", "latency doubled"]
    assert main(argv) == 0
    change = json.loads(capsys.readouterr().out)
    assert (change["version"], change["previous_version"], change["reason"]) == (
        1,
        2,
        "latency doubled",
    )
    assert main(["--data-dir", str(tmp_path), "rollback", MODEL]) == 1
    assert "conflict" in capsys.readouterr().err
