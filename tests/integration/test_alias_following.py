"""Deployments that name ``model@alias`` follow the alias when it moves; pinned ones stay put.

After a rollout started from an alias, the deployment follows the promoted alias, so moving the
champion back moves the deployment's traffic with it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from app.bootstrap import Platform
from app.kernel.settings import Settings
from app.modules.inference.settings import InferenceSettings
from contracts.common import Tensor
from contracts.inference import (
    Deployment,
    GetDeployment,
    Predict,
    PromoteRollout,
    PutDeployment,
    Route,
    StartRollout,
)
from contracts.registry import RegisterVersion, SetAlias
from tests.fakes.models import linear_onnx

MODEL = "churn"
ROWS = Tensor.from_numpy(np.ones((1, 3), dtype=np.float32))


@pytest.fixture
async def platform(tmp_path: Path) -> AsyncIterator[Platform]:
    settings = Settings(
        data_dir=tmp_path, modules=("registry", "monitoring", "inference")
    ).with_module(InferenceSettings(prediction_log_sample=0.0))
    async with Platform(settings) as platform:
        registry = platform.client("registry", caller="tests")
        for seed in (0, 1):
            await registry.register_version(
                RegisterVersion(name=MODEL, artifact=linear_onnx(seed=seed))
            )
        await registry.set_alias(SetAlias(name=MODEL, alias="champion", version=1))
        yield platform


async def _served(platform: Platform, ref: str) -> int:
    inference = platform.client("inference", caller="tests")
    answer = await inference.predict(Predict(model=ref, inputs={"x": ROWS}))
    return answer.version


async def _move_champion(platform: Platform, version: int) -> None:
    registry = platform.client("registry", caller="tests")
    await registry.set_alias(SetAlias(name=MODEL, alias="champion", version=version))
    await platform.bus.drain(timeout=10)  # the ModelAliasChanged delivery to inference


async def test_a_deployment_naming_an_alias_serves_its_new_version_when_it_moves(
    platform: Platform,
) -> None:
    inference = platform.client("inference", caller="tests")
    await inference.put_deployment(
        PutDeployment(
            deployment=Deployment(
                name="scores",
                routes=[Route(model=f"{MODEL}@champion", weight=1.0)],
                cache_ttl_s=600,
            )
        )
    )
    await inference.put_deployment(
        PutDeployment(
            deployment=Deployment(name="pinned", routes=[Route(model=f"{MODEL}:1", weight=1.0)])
        )
    )
    assert await _served(platform, "scores") == 1
    assert await _served(platform, "scores") == 1  # the second answer comes from the cache

    await _move_champion(platform, 2)

    assert await _served(platform, "scores") == 2  # no cached v1 answer, no stale resolution
    assert await _served(platform, "pinned") == 1
    assert await _served(platform, MODEL) == 2


async def test_after_a_rollout_from_the_champion_the_deployment_follows_it_back(
    platform: Platform,
) -> None:
    inference = platform.client("inference", caller="tests")
    await inference.put_deployment(
        PutDeployment(
            deployment=Deployment(
                name="scores", routes=[Route(model=f"{MODEL}@champion", weight=1.0)]
            )
        )
    )
    rollout = await inference.start_rollout(
        StartRollout(deployment="scores", candidate=f"{MODEL}:2")
    )
    assert (rollout.baseline, rollout.follows) == (f"{MODEL}:1", f"{MODEL}@champion")
    promoted = await inference.promote_rollout(PromoteRollout(id=rollout.id))
    assert promoted.status == "promoted"
    deployment = await inference.get_deployment(GetDeployment(name="scores"))
    assert deployment.routes == [Route(model=f"{MODEL}@champion", weight=100.0)]
    assert await _served(platform, "scores") == 2

    await _move_champion(platform, 1)

    assert await _served(platform, "scores") == 1


async def test_a_rollout_of_a_pinned_deployment_leaves_it_pinned(platform: Platform) -> None:
    inference = platform.client("inference", caller="tests")
    await inference.put_deployment(
        PutDeployment(
            deployment=Deployment(name="scores", routes=[Route(model=f"{MODEL}:1", weight=1.0)])
        )
    )
    rollout = await inference.start_rollout(
        StartRollout(deployment="scores", candidate=f"{MODEL}:2")
    )
    assert rollout.follows is None
    await inference.promote_rollout(PromoteRollout(id=rollout.id))
    await _move_champion(platform, 1)

    deployment = await inference.get_deployment(GetDeployment(name="scores"))
    assert deployment.routes == [Route(model=f"{MODEL}:2", weight=100.0)]
    assert await _served(platform, "scores") == 2
