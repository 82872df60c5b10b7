"""The registry contract against :class:`LocalRegistryService`, on SQLite and PostgreSQL.

Besides the shared behaviour, this checks what only the local implementation can show: events in
the outbox table, written in the state change's transaction, and the artifact folder's contents.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import msgspec
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from app.kernel.db import Database
from app.kernel.events import Outbox
from app.modules.registry import store
from app.modules.registry.artifacts import LocalArtifactStore
from app.modules.registry.service import LocalRegistryService
from contracts.common import InvalidInput, NotFound
from contracts.registry import (
    DeleteAlias,
    DeleteVersion,
    GetModel,
    GetVersion,
    ModelAliasChanged,
    ModelVersionRegistered,
    RegisterVersion,
    RegistryService,
    SetAlias,
)
from tests.contract.registry_behaviour import RegistryBehaviour, download, register
from tests.fakes.models import linear_onnx, torch_mlp_onnx

EVENTS = (ModelVersionRegistered, ModelAliasChanged)
_DECODE = msgspec.msgpack.Decoder(ModelVersionRegistered | ModelAliasChanged)


@dataclass
class LocalRegistry:
    """A local registry and what it is made of, for looking behind the contract."""

    service: LocalRegistryService
    db: Database
    outbox: Outbox
    artifacts: LocalArtifactStore

    def events(self) -> list[msgspec.Struct]:
        with self.db.engine.connect() as conn:
            rows = conn.execute(sa.select(self.outbox.table).order_by(self.outbox.table.c.seq))
            return [_DECODE.decode(row.payload) for row in rows]

    def count(self, table: sa.Table) -> int:
        with self.db.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())

    def stored_files(self) -> list[Path]:
        return sorted(p for p in self.artifacts.root.rglob("*") if p.is_file())


def make_local(
    url: str,
    root: Path,
    *,
    outbox: Outbox | None = None,
    artifacts: LocalArtifactStore | None = None,
) -> LocalRegistry:
    db = Database("registry", url)
    db.migrate("registry")
    outbox = outbox or Outbox("registry", EVENTS)
    artifacts = artifacts or LocalArtifactStore(root / "artifacts")
    service = LocalRegistryService(db=db, outbox=outbox, artifacts=artifacts)
    return LocalRegistry(service=service, db=db, outbox=outbox, artifacts=artifacts)


@pytest.fixture
def local(database_url: str, tmp_path: Path) -> Iterator[LocalRegistry]:
    built = make_local(database_url, tmp_path)
    yield built
    built.db.dispose()


@pytest.fixture
def registry(local: LocalRegistry) -> RegistryService:
    return local.service


class TestLocalRegistry(RegistryBehaviour):
    """The shared behaviour, in-process."""


def test_the_service_implements_every_contract_method() -> None:
    methods = [n for n, f in vars(RegistryService).items() if callable(f) and n[0] != "_"]
    assert len(methods) == 16
    for name in methods:
        ours, theirs = getattr(LocalRegistryService, name), getattr(RegistryService, name)
        assert (
            inspect.signature(ours).parameters.keys() == inspect.signature(theirs).parameters.keys()
        )
        assert inspect.iscoroutinefunction(ours) == inspect.iscoroutinefunction(theirs), name


async def test_torch_exports_register(local: LocalRegistry) -> None:
    pytest.importorskip("torch")
    data = torch_mlp_onnx()

    info = await local.service.register_version(RegisterVersion(name="mlp", artifact=data))

    assert info.signature.inputs[0].shape == [-1, 4]
    assert await download(local.service, "mlp") == data


# --- events -----------------------------------------------------------------------------------


async def test_registration_writes_its_event(local: LocalRegistry) -> None:
    info = await register(local.service)

    assert local.events() == [
        ModelVersionRegistered(name="iris", version=1, sha256=info.sha256, size=info.size)
    ]


async def test_alias_changes_write_events(local: LocalRegistry) -> None:
    await register(local.service, seed=0)
    await register(local.service, seed=1)
    service = local.service

    await service.set_alias(SetAlias(name="iris", alias="prod", version=1))
    await service.set_alias(SetAlias(name="iris", alias="prod", version=1))  # unchanged: no event
    await service.set_alias(SetAlias(name="iris", alias="prod", version=2))
    await service.delete_alias(DeleteAlias(name="iris", alias="prod"))

    aliases = [e for e in local.events() if isinstance(e, ModelAliasChanged)]
    assert aliases == [
        ModelAliasChanged(name="iris", alias="prod", version=1, previous_version=None),
        ModelAliasChanged(name="iris", alias="prod", version=2, previous_version=1),
        ModelAliasChanged(name="iris", alias="prod", version=None, previous_version=2),
    ]


class FailingOutbox(Outbox):
    """Writes the event, then fails, as a crash right before commit would."""

    def add(
        self, conn: Connection, event: msgspec.Struct, *, traceparent: str | None = None
    ) -> str:
        super().add(conn, event, traceparent=traceparent)
        raise RuntimeError("injected failure after the outbox insert")


async def test_a_failed_transaction_leaves_no_version_event_or_blob(
    database_url: str, tmp_path: Path
) -> None:
    local = make_local(database_url, tmp_path, outbox=FailingOutbox("registry", EVENTS))
    try:
        with pytest.raises(RuntimeError, match="injected"):
            await register(local.service)

        assert local.count(store.versions) == 0
        assert local.count(store.models) == 0
        assert local.count(local.outbox.table) == 0
        assert local.stored_files() == []
    finally:
        local.db.dispose()


async def test_a_failed_alias_change_leaves_the_alias_as_it_was(
    database_url: str, tmp_path: Path
) -> None:
    healthy = make_local(database_url, tmp_path)
    await register(healthy.service)
    await healthy.service.set_alias(SetAlias(name="iris", alias="prod", version=1))
    await register(healthy.service, seed=1)
    healthy.db.dispose()
    failing = make_local(database_url, tmp_path, outbox=FailingOutbox("registry", EVENTS))
    try:
        with pytest.raises(RuntimeError, match="injected"):
            await failing.service.set_alias(SetAlias(name="iris", alias="prod", version=2))

        info = await failing.service.get_version(GetVersion(ref="iris@prod"))
        assert info.version == 1
        assert len(failing.events()) == 3  # two registrations and the first alias
    finally:
        failing.db.dispose()


# --- artifact files ---------------------------------------------------------------------------


async def test_blobs_are_content_addressed(local: LocalRegistry) -> None:
    data = linear_onnx(seed=1)
    digest = hashlib.sha256(data).hexdigest()

    await local.service.register_version(RegisterVersion(name="a", artifact=data))
    await local.service.register_version(RegisterVersion(name="b", artifact=data))

    assert local.stored_files() == [local.artifacts.root / "sha256" / digest[:2] / digest]
    assert local.stored_files()[0].read_bytes() == data


async def test_a_corrupt_upload_leaves_no_file_and_no_row(local: LocalRegistry) -> None:
    with pytest.raises(InvalidInput):
        await local.service.register_version(
            RegisterVersion(name="iris", artifact=b"\x00corrupt" * 100)
        )
    truncated = linear_onnx()[:50]
    with pytest.raises(InvalidInput):
        await local.service.register_version(RegisterVersion(name="iris", artifact=truncated))

    assert local.stored_files() == []
    assert local.count(store.models) == 0
    assert local.count(store.versions) == 0
    assert local.count(local.outbox.table) == 0


async def test_deleting_the_last_reference_removes_the_file(local: LocalRegistry) -> None:
    first = await register(local.service, "a", seed=2)
    await register(local.service, "b", seed=2)
    path = local.artifacts.path(first.sha256)

    await local.service.delete_version(DeleteVersion(name="a", version=1))
    assert path.is_file()
    await local.service.delete_version(DeleteVersion(name="b", version=1))
    assert not path.exists()


class VanishingStore(LocalArtifactStore):
    """Loses the first blob it writes right after writing it, as a concurrent deletion could."""

    vanished = False

    def put(self, digest: str, data: bytes) -> bool:
        written = super().put(digest, data)
        if not self.vanished:
            self.vanished = True
            self.delete(digest)
        return written


async def test_a_blob_deleted_before_commit_is_written_again(
    database_url: str, tmp_path: Path
) -> None:
    local = make_local(database_url, tmp_path, artifacts=VanishingStore(tmp_path / "artifacts"))
    try:
        data = linear_onnx(seed=3)
        await local.service.register_version(RegisterVersion(name="iris", artifact=data))

        assert await download(local.service, "iris") == data
    finally:
        local.db.dispose()


async def test_the_sweep_removes_stale_leftovers_only(local: LocalRegistry) -> None:
    kept = await register(local.service, seed=0)
    old = time.time() - 2 * 3600
    orphan = linear_onnx(seed=1)
    orphan_digest = hashlib.sha256(orphan).hexdigest()
    young = linear_onnx(seed=2)
    young_digest = hashlib.sha256(young).hexdigest()
    local.artifacts.put(orphan_digest, orphan)
    local.artifacts.put(young_digest, young)
    os.utime(local.artifacts.path(orphan_digest), (old, old))
    os.utime(local.artifacts.path(kept.sha256), (old, old))
    leftover = local.artifacts.tmp_root / "abc.part"
    fresh_leftover = local.artifacts.tmp_root / "def.part"
    leftover.write_bytes(b"half a model")
    fresh_leftover.write_bytes(b"in flight")
    os.utime(leftover, (old, old))

    removed = await local.service.sweep_artifacts()

    assert removed == 1
    assert not local.artifacts.path(orphan_digest).exists()
    assert local.artifacts.path(young_digest).exists()
    assert local.artifacts.path(kept.sha256).exists()
    assert not leftover.exists()
    assert fresh_leftover.exists()
    assert await download(local.service, "iris") == linear_onnx(seed=0)


async def test_a_missing_blob_is_reported_not_hidden(local: LocalRegistry) -> None:
    info = await register(local.service)
    local.artifacts.path(info.sha256).unlink()

    with pytest.raises(Exception, match="missing") as caught:
        await download(local.service, "iris")

    assert getattr(caught.value, "code", None) == "integrity_error"


async def test_state_survives_a_new_service_on_the_same_database(
    database_url: str, tmp_path: Path
) -> None:
    first = make_local(database_url, tmp_path)
    await register(first.service)
    await first.service.set_alias(SetAlias(name="iris", alias="champion", version=1))
    first.db.dispose()

    second = make_local(database_url, tmp_path)  # migrating again is a no-op
    try:
        model = await second.service.get_model(GetModel(name="iris"))
        assert model.aliases == {"champion": 1}
        assert await download(second.service, "iris") == linear_onnx()
        with pytest.raises(NotFound):
            await second.service.get_model(GetModel(name="other"))
    finally:
        second.db.dispose()
