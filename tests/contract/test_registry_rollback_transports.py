"""Alias rollback and history across a msgpack round trip: the answers and the ``Conflict``
reach a remote caller as they leave the registry."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from app.kernel import calls
from app.kernel.codec import loopback
from contracts.common import Conflict
from contracts.registry import (
    ListAliasHistory,
    RegisterVersion,
    RegistryService,
    RollbackAlias,
    SetAlias,
)
from tests.contract.test_registry_contract import make_local
from tests.fakes.models import linear_onnx


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[RegistryService]:
    local = make_local(f"sqlite:///{tmp_path / 'registry.db'}", tmp_path)
    wire = loopback(RegistryService, local.service)
    yield calls.bind(RegistryService, wire, module="registry", caller="tests")
    local.db.dispose()


async def test_rollback_and_history_over_the_wire(registry: RegistryService) -> None:
    for seed in (0, 1):
        await registry.register_version(RegisterVersion(name="m", artifact=linear_onnx(seed=seed)))
    for version in (1, 2):
        await registry.set_alias(SetAlias(name="m", alias="prod", version=version, reason="ship"))

    change = await registry.rollback_alias(RollbackAlias(name="m", alias="prod", reason="bad"))

    assert (change.action, change.version, change.previous_version) == ("rollback", 1, 2)
    page = await registry.list_alias_history(ListAliasHistory(name="m", alias="prod"))
    assert [(c.action, c.version, c.reason) for c in page.items] == [
        ("rollback", 1, "bad"),
        ("set", 2, "ship"),
        ("set", 1, "ship"),
    ]
    with pytest.raises(Conflict, match="no earlier version"):
        await registry.rollback_alias(RollbackAlias(name="m", alias="prod"))
