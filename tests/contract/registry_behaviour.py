"""Behaviour every :class:`contracts.registry.RegistryService` shows, whatever the transport.

Subclass :class:`RegistryBehaviour` in a test module that provides a ``registry`` fixture; these
tests touch nothing but the Protocol. The registry may be shared by the tests of a module (one
server for all of them): each test works in its own namespace (the ``ns`` fixture), names its
models ``ns("iris")``, lists only ``ListModels(prefix=ns.prefix)`` and uses artifact contents
no other test registers where it watches blobs go, so what other tests left behind never shows.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid

import msgspec
import numpy as np
import pytest

from app.kernel.context import CallContext, use
from contracts.common import Conflict, InvalidInput, NotFound, Tensor
from contracts.registry import (
    ArchiveVersion,
    ColumnProfile,
    DeleteAlias,
    DeleteVersion,
    FetchArtifact,
    GetAlias,
    GetModel,
    GetReferenceProfile,
    GetVersion,
    Histogram,
    Lineage,
    ListModels,
    ListVersions,
    ReferenceProfile,
    RegisterVersion,
    RegistryService,
    SetAlias,
    SetReference,
    TensorSpec,
    UpdateModel,
    VersionInfo,
    read_artifact,
)
from tests.fakes.models import linear_onnx

__all__ = ["Namespace", "RegistryBehaviour", "reference_profile"]

BAD_NAMES = ["../x", "a/b", ".hidden", "", "has space", "x" * 129, "-dash", "a\\b", "ünï"]


class Namespace:
    """Model names, and artifact seeds, that belong to one test only.

    ``ns("iris")`` is this test's model ``iris``; ``ns.prefix`` lists exactly this test's models;
    ``ns.seed(k)`` gives artifact bytes (``linear_onnx(seed=...)``) that no other test uploads,
    for tests that watch a blob being deleted once its last version goes.
    """

    def __init__(self) -> None:
        token = uuid.uuid4()
        self.prefix = f"t{token.hex[:12]}-"
        self._seed = 1_000 + (token.int >> 64)  # far above the small seeds tests use directly

    def __call__(self, name: str) -> str:
        return self.prefix + name

    def seed(self, n: int = 0) -> int:
        return self._seed + n


async def register(
    registry: RegistryService, name: str = "iris", *, seed: int = 0, **fields: object
) -> VersionInfo:
    return await registry.register_version(
        RegisterVersion(name=name, artifact=linear_onnx(seed=seed), **fields)  # type: ignore[arg-type]
    )


async def resolve(registry: RegistryService, ref: str) -> int:
    return (await registry.get_version(GetVersion(ref=ref))).version


async def download(registry: RegistryService, ref: str, chunk_size: int = 1 << 20) -> bytes:
    _, data = await read_artifact(
        registry.fetch_artifact(FetchArtifact(ref=ref, chunk_size=chunk_size))
    )
    return data


def reference_profile(rows: int = 40, *, seed: int = 0) -> ReferenceProfile:
    """A profile of three input columns (one a NaN-holding feature) and two prediction outputs."""
    rng = np.random.default_rng(seed)
    sample = rng.normal(size=(rows, 3)).astype(np.float32)
    sample[0, 1] = np.nan
    return ReferenceProfile(
        columns=["age", "income", "is_member"],
        sample=Tensor.from_numpy(sample),
        predictions={
            "y": Tensor.from_numpy(rng.normal(size=(rows, 2)).astype(np.float32)),
            "label": Tensor.from_numpy(rng.integers(0, 2, size=rows).astype(np.int64)),
        },
        profiles=[
            ColumnProfile(
                name="age",
                kind="numerical",
                histogram=Histogram(edges=[0.0, 0.5, 1.0], counts=[3, 4]),
                mean=0.25,
                std=1.5,
            ),
            ColumnProfile(name="is_member", kind="categorical", frequencies={"0": 0.4, "1": 0.6}),
        ],
        rows=1_000,
        task="regression",
    )


def assert_same_profile(got: ReferenceProfile, want: ReferenceProfile) -> None:
    assert (got.columns, got.profiles, got.rows, got.task) == (
        want.columns,
        want.profiles,
        want.rows,
        want.task,
    )
    assert (got.sample.dtype, got.sample.shape) == (want.sample.dtype, want.sample.shape)
    np.testing.assert_array_equal(got.sample.to_numpy(), want.sample.to_numpy())
    assert set(got.predictions) == set(want.predictions)
    for name, tensor in want.predictions.items():
        assert got.predictions[name].dtype == tensor.dtype
        np.testing.assert_array_equal(got.predictions[name].to_numpy(), tensor.to_numpy())


async def model_names(registry: RegistryService, prefix: str | None = None) -> list[str]:
    """The names of every model (starting with ``prefix``), following cursors to the end."""
    names: list[str] = []
    cursor = None
    while True:
        page = await registry.list_models(ListModels(limit=500, cursor=cursor, prefix=prefix))
        names.extend(m.name for m in page.items)
        cursor = page.next_cursor
        if cursor is None:
            return names


class RegistryBehaviour:
    """The registry contract's behaviour; needs a ``registry`` fixture."""

    @pytest.fixture
    def ns(self) -> Namespace:
        return Namespace()

    # --- registration and reading ---------------------------------------------------------

    async def test_register_then_read_back(self, registry: RegistryService, ns: Namespace) -> None:
        iris = ns("iris")
        data = linear_onnx(3, 2)
        lineage = Lineage(training_job_id="job-1", extra={"git": "abc123"})

        info = await registry.register_version(
            RegisterVersion(
                name=iris,
                artifact=data,
                description="first cut",
                tags={"team": "ml"},
                metrics={"accuracy": 0.93},
                params={"lr": "0.1"},
                lineage=lineage,
            )
        )

        assert (info.name, info.version, info.status) == (iris, 1, "ready")
        assert info.sha256 == hashlib.sha256(data).hexdigest()
        assert info.size == len(data)
        assert info.signature.inputs == [TensorSpec(name="x", dtype="FP32", shape=[-1, 3])]
        assert info.signature.outputs == [TensorSpec(name="y", dtype="FP32", shape=[-1, 2])]
        assert info.created_at.tzinfo is not None
        assert await registry.get_version(GetVersion(ref=f"{iris}:1")) == info
        assert await registry.get_version(GetVersion(ref=iris)) == info
        stored = await registry.get_version(GetVersion(ref=f"{iris}:1"))
        assert (stored.description, stored.tags, stored.metrics, stored.params) == (
            "first cut",
            {"team": "ml"},
            {"accuracy": 0.93},
            {"lr": "0.1"},
        )
        assert stored.lineage == lineage

    async def test_the_model_is_created_on_first_registration(
        self, registry: RegistryService, ns: Namespace
    ) -> None:
        iris = ns("iris")
        with pytest.raises(NotFound):
            await registry.get_model(GetModel(name=iris))

        await register(registry, iris)
        await register(registry, iris, seed=1)

        model = await registry.get_model(GetModel(name=iris))
        assert (model.name, model.latest_version, model.version_count) == (iris, 2, 2)
        assert model.aliases == {}

    async def test_answers_encode_as_json(self, registry: RegistryService, ns: Namespace) -> None:
        info = await register(registry, ns("iris"))

        decoded = msgspec.json.decode(msgspec.json.encode(info), type=VersionInfo)

        assert decoded == info

    async def test_versions_are_numbered_from_one_per_model(
        self, registry: RegistryService, ns: Namespace
    ) -> None:
        numbers = [(await register(registry, ns("a"), seed=s)).version for s in range(3)]
        other = await register(registry, ns("b"), seed=9)

        assert numbers == [1, 2, 3]
        assert other.version == 1

    async def test_numbers_are_never_reused_after_deletion(
        self, registry: RegistryService, ns: Namespace
    ) -> None:
        iris = ns("iris")
        await register(registry, iris, seed=0)
        await register(registry, iris, seed=1)
        await registry.delete_version(DeleteVersion(name=iris, version=2))
        await registry.delete_version(DeleteVersion(name=iris, version=1))

        again = await register(registry, iris, seed=2)

        assert again.version == 3
        model = await registry.get_model(GetModel(name=iris))
        assert (model.latest_version, model.version_count) == (3, 1)

    async def test_concurrent_registrations_get_distinct_consecutive_numbers(
        self, registry: RegistryService, ns: Namespace
    ) -> None:
        iris = ns("iris")
        infos = await asyncio.gather(*(register(registry, iris, seed=s) for s in range(8)))

        assert sorted(i.version for i in infos) == list(range(1, 9))
        by_number = {i.version: i.sha256 for i in infos}
        page = await registry.list_versions(ListVersions(name=iris, limit=20))
        assert {v.version: v.sha256 for v in page.items} == by_number

    async def test_unknown_things_are_not_found(
        self, registry: RegistryService, ns: Namespace
    ) -> None:
        iris, nope = ns("iris"), ns("nope")
        await register(registry, iris)

        for ref in (nope, f"{nope}:1", f"{nope}@champion", f"{iris}:2", f"{iris}@staging"):
            with pytest.raises(NotFound):
                await registry.get_version(GetVersion(ref=ref))
        with pytest.raises(NotFound):
            await registry.list_versions(ListVersions(name=nope))
        with pytest.raises(NotFound):
            await registry.get_alias(GetAlias(name=iris, alias="staging"))

    # --- names ----------------------------------------------------------------------------

    @pytest.mark.parametrize("name", BAD_NAMES)
    async def test_bad_model_names_are_refused_before_anything_is_stored(
        self, registry: RegistryService, name: str
    ) -> None:
        # A bad name can't carry a test's prefix, so: the whole list of models stays as it was.
        before = await model_names(registry)

        with pytest.raises(InvalidInput):
            await register(registry, name)
        with pytest.raises(InvalidInput):
            await registry.get_model(GetModel(name=name))

        assert await model_names(registry) == before

    @pytest.mark.parametrize("alias", [*BAD_NAMES, "latest", "LATEST", "v1", "V7", "v123"])
    async def test_bad_and_reserved_aliases_are_refused(
        self, registry: RegistryService, ns: Namespace, alias: str
    ) -> None:
        iris = ns("iris")
        await register(registry, iris)

        with pytest.raises(InvalidInput):
            await registry.set_alias(SetAlias(name=iris, alias=alias, version=1))
        with pytest.raises(InvalidInput):
            await registry.get_alias(GetAlias(name=iris, alias=alias))
        with pytest.raises(InvalidInput):
            await registry.delete_alias(DeleteAlias(name=iris, alias=alias))

    async def test_aliases_that_merely_start_like_reserved_ones_are_fine(
        self, registry: RegistryService, ns: Namespace
    ) -> None:
        iris = ns("iris")
        await register(registry, iris)

        for alias in ("latest-good", "v1beta", "vip"):
            await registry.set_alias(SetAlias(name=iris, alias=alias, version=1))

        assert set((await registry.get_model(GetModel(name=iris))).aliases) == {
            "latest-good",
            "v1beta",
            "vip",
        }

    @pytest.mark.parametrize("ref", ["iris:0", "iris:-1", "iris:x", "iris@", "@x", ":1", ""])
    async def test_malformed_references_are_invalid(
        self, registry: RegistryService, ns: Namespace, ref: str
    ) -> None:
        with pytest.raises(InvalidInput):
            await registry.get_version(GetVersion(ref=ref.replace("iris", ns("iris"))))

    # --- corrupt input ----------------------------------------------------------------------

    @pytest.mark.parametrize("data", [b"", b"not an onnx model", b"\x08\x07\x12\x00"])
    async def test_corrupt_uploads_register_nothing(
        self, registry: RegistryService, ns: Namespace, data: bytes
    ) -> None:
        iris = ns("iris")
        with pytest.raises(InvalidInput):
            await registry.register_version(RegisterVersion(name=iris, artifact=data))

        with pytest.raises(NotFound):
            await registry.get_model(GetModel(name=iris))
        assert await model_names(registry, ns.prefix) == []

    async def test_bad_metadata_is_invalid(self, registry: RegistryService, ns: Namespace) -> None:
        bad: list[dict[str, object]] = [
            {"metrics": {"loss": float("nan")}},
            {"metrics": {"loss": float("inf")}},
            {"tags": {"": "empty key"}},
            {"tags": {"k": "v" * 6000}},
        ]
        for fields in bad:
            with pytest.raises(InvalidInput):
                await register(registry, ns("iris"), **fields)

        assert await model_names(registry, ns.prefix) == []

    # --- listing ----------------------------------------------------------------------------

    async def test_models_page_by_name_with_opaque_cursors(
        self, registry: RegistryService, ns: Namespace
    ) -> None:
        names = [ns(n) for n in ("m-c", "m-a", "other", "m-b", "m-e", "m-d")]
        for seed, name in enumerate(names):
            await register(registry, name, seed=seed)

        seen: list[str] = []
        cursor = None
        pages = 0
        while True:
            page = await registry.list_models(ListModels(limit=2, cursor=cursor, prefix=ns.prefix))
            seen.extend(m.name for m in page.items)
            pages += 1
            cursor = page.next_cursor
            if cursor is None:
                break

        assert seen == sorted(names)
        assert pages == 3
        everything = await registry.list_models(ListModels(prefix=ns.prefix))
        assert [m.name for m in everything.items] == sorted(names)
        assert all(m.version_count == 1 for m in everything.items)

    async def test_models_filter_by_prefix_and_tags(
        self, registry: RegistryService, ns: Namespace
    ) -> None:
        team = ns("ml")  # a tag value no other test's models carry
        for seed, name in enumerate(["m_a", "mXa", "m_b", "n_a"]):
            await register(registry, ns(name), seed=seed)
        await registry.update_model(UpdateModel(name=ns("m_b"), tags={"team": team, "tier": "1"}))
        await registry.update_model(UpdateModel(name=ns("n_a"), tags={"team": team}))

        prefixed = await registry.list_models(ListModels(prefix=ns("m_")))
        tagged = await registry.list_models(ListModels(tags={"team": team}))
        both = await registry.list_models(ListModels(prefix=ns("m"), tags={"team": team}))

        assert [m.name for m in prefixed.items] == [ns("m_a"), ns("m_b")]  # "_" is no wildcard
        assert [m.name for m in tagged.items] == [ns("m_b"), ns("n_a")]
        assert [m.name for m in both.items] == [ns("m_b")]

    async def test_tag_filtered_pages_still_fill_up(
        self, registry: RegistryService, ns: Namespace
    ) -> None:
        for seed in range(6):
            await register(registry, ns(f"m{seed}"), seed=seed)
            if seed % 2:
                await registry.update_model(UpdateModel(name=ns(f"m{seed}"), tags={"odd": "yes"}))

        odd = ListModels(limit=2, prefix=ns.prefix, tags={"odd": "yes"})
        first = await registry.list_models(odd)
        second = await registry.list_models(msgspec.structs.replace(odd, cursor=first.next_cursor))

        assert [m.name for m in first.items] == [ns("m1"), ns("m3")]
        assert [m.name for m in second.items] == [ns("m5")]
        assert second.next_cursor is None

    async def test_versions_page_newest_first(
        self, registry: RegistryService, ns: Namespace
    ) -> None:
        iris = ns("iris")
        for seed in range(5):
            await register(registry, iris, seed=seed)
        await registry.archive_version(ArchiveVersion(name=iris, version=4))

        first = await registry.list_versions(ListVersions(name=iris, limit=3))
        rest = await registry.list_versions(
            ListVersions(name=iris, limit=3, cursor=first.next_cursor)
        )
        live = await registry.list_versions(ListVersions(name=iris, include_archived=False))

        assert [v.version for v in first.items] == [5, 4, 3]
        assert [v.version for v in rest.items] == [2, 1]
        assert rest.next_cursor is None
        assert [v.version for v in live.items] == [5, 3, 2, 1]

    @pytest.mark.parametrize("limit", [0, -1, 501])
    async def test_limits_outside_one_to_five_hundred_are_invalid(
        self, registry: RegistryService, ns: Namespace, limit: int
    ) -> None:
        iris = ns("iris")
        await register(registry, iris)

        with pytest.raises(InvalidInput):
            await registry.list_models(ListModels(limit=limit))
        with pytest.raises(InvalidInput):
            await registry.list_models(ListModels(limit=limit, prefix=ns.prefix))
        with pytest.raises(InvalidInput):
            await registry.list_versions(ListVersions(name=iris, limit=limit))

    async def test_forged_cursors_are_invalid(
        self, registry: RegistryService, ns: Namespace
    ) -> None:
        iris, other = ns("iris"), ns("other")
        for seed in range(3):
            await register(registry, iris, seed=seed)
        await register(registry, other)
        versions_cursor = await registry.list_versions(ListVersions(name=iris, limit=1))
        assert versions_cursor.next_cursor is not None

        for cursor in ("garbage", "!!!", "eyJ4IjoxfQ", versions_cursor.next_cursor):
            with pytest.raises(InvalidInput):
                await registry.list_models(ListModels(cursor=cursor))
            with pytest.raises(InvalidInput):
                await registry.list_models(ListModels(cursor=cursor, prefix=ns.prefix))
        with pytest.raises(InvalidInput):  # a cursor of another model's list
            await registry.list_versions(
                ListVersions(name=other, cursor=versions_cursor.next_cursor)
            )

    # --- models -----------------------------------------------------------------------------

    async def test_update_model_changes_only_what_is_given(
        self, registry: RegistryService, ns: Namespace
    ) -> None:
        iris = ns("iris")
        await register(registry, iris)
        before = await registry.get_model(GetModel(name=iris))

        described = await registry.update_model(UpdateModel(name=iris, description="flowers"))
        tagged = await registry.update_model(UpdateModel(name=iris, tags={"team": "ml"}))

        assert (described.description, described.tags) == ("flowers", {})
        assert (tagged.description, tagged.tags) == ("flowers", {"team": "ml"})
        assert tagged.updated_at >= before.updated_at
        assert tagged.created_at == before.created_at
        assert await registry.get_model(GetModel(name=iris)) == tagged

    async def test_update_model_checks_its_input(
        self, registry: RegistryService, ns: Namespace
    ) -> None:
        iris = ns("iris")
        with pytest.raises(NotFound):
            await registry.update_model(UpdateModel(name=iris, description="x"))
        await register(registry, iris)
        with pytest.raises(InvalidInput):
            await registry.update_model(UpdateModel(name=iris, tags={"k": 1}))  # type: ignore[dict-item]

    # --- aliases ----------------------------------------------------------------------------

    async def test_aliases_set_move_read_and_delete(
        self, registry: RegistryService, ns: Namespace
    ) -> None:
        iris = ns("iris")
        for seed in range(3):
            await register(registry, iris, seed=seed)

        created = await registry.set_alias(SetAlias(name=iris, alias="staging", version=1))
        moved = await registry.set_alias(SetAlias(name=iris, alias="staging", version=2))

        assert (created.version, moved.version) == (1, 2)
        assert (await registry.get_alias(GetAlias(name=iris, alias="staging"))).version == 2
        assert await resolve(registry, f"{iris}@staging") == 2
        assert (await registry.get_version(GetVersion(ref=f"{iris}:2"))).aliases == ["staging"]
        assert (await registry.get_version(GetVersion(ref=f"{iris}:1"))).aliases == []
        assert (await registry.get_model(GetModel(name=iris))).aliases == {"staging": 2}

        removed = await registry.delete_alias(DeleteAlias(name=iris, alias="staging"))

        assert removed.version == 2
        with pytest.raises(NotFound):
            await registry.get_alias(GetAlias(name=iris, alias="staging"))
        with pytest.raises(NotFound):
            await registry.delete_alias(DeleteAlias(name=iris, alias="staging"))
        assert (await registry.get_model(GetModel(name=iris))).aliases == {}

    async def test_setting_an_alias_to_where_it_points_is_a_no_op(
        self, registry: RegistryService, ns: Namespace
    ) -> None:
        iris = ns("iris")
        await register(registry, iris)
        first = await registry.set_alias(SetAlias(name=iris, alias="prod", version=1))

        again = await registry.set_alias(SetAlias(name=iris, alias="prod", version=1))

        assert again == first

    async def test_aliases_need_an_existing_version(
        self, registry: RegistryService, ns: Namespace
    ) -> None:
        iris = ns("iris")
        with pytest.raises(NotFound):
            await registry.set_alias(SetAlias(name=iris, alias="prod", version=1))
        await register(registry, iris)
        with pytest.raises(NotFound):
            await registry.set_alias(SetAlias(name=iris, alias="prod", version=2))
        with pytest.raises(InvalidInput):
            await registry.set_alias(SetAlias(name=iris, alias="prod", version=0))

    async def test_bare_name_resolves_champion_else_highest_live(
        self, registry: RegistryService, ns: Namespace
    ) -> None:
        iris = ns("iris")
        for seed in range(3):
            await register(registry, iris, seed=seed)

        assert await resolve(registry, iris) == 3
        await registry.set_alias(SetAlias(name=iris, alias="champion", version=1))
        assert await resolve(registry, iris) == 1
        await registry.delete_alias(DeleteAlias(name=iris, alias="champion"))
        assert await resolve(registry, iris) == 3

    async def test_reserved_alias_references_resolve(
        self, registry: RegistryService, ns: Namespace
    ) -> None:
        iris = ns("iris")
        for seed in range(3):
            await register(registry, iris, seed=seed)
        await registry.set_alias(SetAlias(name=iris, alias="champion", version=1))
        await registry.archive_version(ArchiveVersion(name=iris, version=3))

        assert await resolve(registry, f"{iris}@latest") == 2
        assert await resolve(registry, f"{iris}@v3") == 3
        with pytest.raises(NotFound):
            await resolve(registry, f"{iris}@v9")

    # --- archive ----------------------------------------------------------------------------

    async def test_archived_versions_resolve_only_by_number(
        self, registry: RegistryService, ns: Namespace
    ) -> None:
        iris = ns("iris")
        first = await register(registry, iris, seed=0)
        await register(registry, iris, seed=1)

        archived = await registry.archive_version(ArchiveVersion(name=iris, version=2))

        assert archived.status == "archived"
        assert await resolve(registry, iris) == 1
        assert (await registry.get_version(GetVersion(ref=f"{iris}:2"))).status == "archived"
        assert await download(registry, f"{iris}:2") == linear_onnx(seed=1)
        assert (await registry.get_model(GetModel(name=iris))).latest_version == 1

        await registry.archive_version(ArchiveVersion(name=iris, version=1))
        with pytest.raises(NotFound):
            await resolve(registry, iris)

        restored = await registry.archive_version(
            ArchiveVersion(name=iris, version=1, archived=False)
        )
        assert restored.status == "ready"
        assert restored.sha256 == first.sha256
        assert await resolve(registry, iris) == 1

    async def test_archiving_twice_changes_nothing(
        self, registry: RegistryService, ns: Namespace
    ) -> None:
        iris = ns("iris")
        await register(registry, iris)

        once = await registry.archive_version(ArchiveVersion(name=iris, version=1))
        twice = await registry.archive_version(ArchiveVersion(name=iris, version=1))

        assert once == twice

    async def test_archived_versions_cannot_be_alias_targets(
        self, registry: RegistryService, ns: Namespace
    ) -> None:
        iris = ns("iris")
        await register(registry, iris, seed=0)
        await register(registry, iris, seed=1)
        await registry.archive_version(ArchiveVersion(name=iris, version=1))

        with pytest.raises(Conflict):
            await registry.set_alias(SetAlias(name=iris, alias="prod", version=1))

        await registry.set_alias(SetAlias(name=iris, alias="prod", version=2))
        with pytest.raises(Conflict, match="prod"):
            await registry.archive_version(ArchiveVersion(name=iris, version=2))
        assert (await registry.get_version(GetVersion(ref=f"{iris}:2"))).status == "ready"

    # --- delete -----------------------------------------------------------------------------

    async def test_a_version_an_alias_points_at_cannot_be_deleted(
        self, registry: RegistryService, ns: Namespace
    ) -> None:
        iris = ns("iris")
        await register(registry, iris)
        await registry.set_alias(SetAlias(name=iris, alias="prod", version=1))
        await registry.set_alias(SetAlias(name=iris, alias="champion", version=1))

        with pytest.raises(Conflict) as caught:
            await registry.delete_version(DeleteVersion(name=iris, version=1))

        assert "champion" in caught.value.message
        assert "prod" in caught.value.message
        assert caught.value.details["aliases"] == ["champion", "prod"]
        assert await resolve(registry, f"{iris}:1") == 1

    async def test_delete_removes_the_version(
        self, registry: RegistryService, ns: Namespace
    ) -> None:
        iris = ns("iris")
        await register(registry, iris, seed=ns.seed(0))
        await register(registry, iris, seed=ns.seed(1))

        deleted = await registry.delete_version(DeleteVersion(name=iris, version=2))

        assert (deleted.name, deleted.version, deleted.artifact_deleted) == (iris, 2, True)
        with pytest.raises(NotFound):
            await registry.get_version(GetVersion(ref=f"{iris}:2"))
        with pytest.raises(NotFound):
            await registry.delete_version(DeleteVersion(name=iris, version=2))
        assert await resolve(registry, iris) == 1

    async def test_shared_content_survives_until_its_last_version_goes(
        self, registry: RegistryService, ns: Namespace
    ) -> None:
        a, b, seed = ns("a"), ns("b"), ns.seed(7)
        one = await register(registry, a, seed=seed)
        two = await register(registry, b, seed=seed)
        three = await register(registry, a, seed=seed)
        assert one.sha256 == two.sha256 == three.sha256

        first = await registry.delete_version(DeleteVersion(name=a, version=1))
        second = await registry.delete_version(DeleteVersion(name=a, version=2))

        assert (first.artifact_deleted, second.artifact_deleted) == (False, False)
        assert await download(registry, f"{b}:1") == linear_onnx(seed=seed)
        last = await registry.delete_version(DeleteVersion(name=b, version=1))
        assert last.artifact_deleted is True

    # --- artifacts --------------------------------------------------------------------------

    async def test_artifacts_stream_in_chunks_and_verify(
        self, registry: RegistryService, ns: Namespace
    ) -> None:
        iris = ns("iris")
        data = linear_onnx(16, 8)
        await register(registry, iris)
        info = await registry.register_version(RegisterVersion(name=iris, artifact=data))

        chunks = [c async for c in registry.fetch_artifact(FetchArtifact(ref=iris, chunk_size=100))]

        assert b"".join(c.data for c in chunks) == data
        assert len(chunks) == -(-len(data) // 100)
        assert [c.offset for c in chunks] == list(range(0, len(data), 100))
        assert {(c.name, c.version, c.sha256, c.size) for c in chunks} == {
            (iris, info.version, info.sha256, len(data))
        }
        first, verified = await read_artifact(
            registry.fetch_artifact(FetchArtifact(ref=f"{iris}:{info.version}"))
        )
        assert verified == data
        assert first.version == info.version

    async def test_artifacts_resolve_references_like_get_version(
        self, registry: RegistryService, ns: Namespace
    ) -> None:
        iris = ns("iris")
        await register(registry, iris, seed=0)
        await register(registry, iris, seed=1)
        await registry.set_alias(SetAlias(name=iris, alias="prod", version=1))

        assert await download(registry, f"{iris}@prod") == linear_onnx(seed=0)
        assert await download(registry, f"{iris}:2") == linear_onnx(seed=1)
        with pytest.raises(NotFound):
            await download(registry, f"{iris}:3")

    @pytest.mark.parametrize("chunk_size", [0, -5])
    async def test_chunk_sizes_must_be_positive(
        self, registry: RegistryService, ns: Namespace, chunk_size: int
    ) -> None:
        iris = ns("iris")
        await register(registry, iris)

        with pytest.raises(InvalidInput):
            await download(registry, iris, chunk_size=chunk_size)

    # --- reference profiles -----------------------------------------------------------------

    async def test_a_reference_profile_is_stored_with_its_version(
        self, registry: RegistryService, ns: Namespace
    ) -> None:
        iris = ns("iris")
        profile = reference_profile()

        info = await register(registry, iris, reference_profile=profile)
        await registry.set_alias(SetAlias(name=iris, alias="prod", version=1))

        assert info.has_reference_profile is True
        assert (await registry.get_version(GetVersion(ref=f"{iris}@prod"))).has_reference_profile
        listed = await registry.list_versions(ListVersions(name=iris))
        assert [v.has_reference_profile for v in listed.items] == [True]
        for ref in (f"{iris}:1", f"{iris}@prod", iris):
            got = await registry.get_reference_profile(GetReferenceProfile(ref=ref))
            assert_same_profile(got, profile)

    async def test_a_version_registered_without_a_profile_has_none(
        self, registry: RegistryService, ns: Namespace
    ) -> None:
        iris = ns("iris")
        await register(registry, iris, seed=0, reference_profile=reference_profile())
        info = await register(registry, iris, seed=1)

        assert info.has_reference_profile is False
        assert not (await registry.get_version(GetVersion(ref=f"{iris}:2"))).has_reference_profile
        listed = await registry.list_versions(ListVersions(name=iris))
        assert [v.has_reference_profile for v in listed.items] == [False, True]
        for ref in (f"{iris}:2", iris, f"{iris}:3", ns("unknown")):
            with pytest.raises(NotFound):
                await registry.get_reference_profile(GetReferenceProfile(ref=ref))

    async def test_deleting_a_version_removes_its_profile(
        self, registry: RegistryService, ns: Namespace
    ) -> None:
        iris = ns("iris")
        first, second = reference_profile(seed=1), reference_profile(seed=2)
        await register(registry, iris, seed=0, reference_profile=first)
        await register(registry, iris, seed=1, reference_profile=second)

        await registry.delete_version(DeleteVersion(name=iris, version=2))

        with pytest.raises(NotFound):
            await registry.get_reference_profile(GetReferenceProfile(ref=f"{iris}:2"))
        kept = await registry.get_reference_profile(GetReferenceProfile(ref=iris))
        assert_same_profile(kept, first)

    async def test_inconsistent_profiles_are_invalid_and_register_nothing(
        self, registry: RegistryService, ns: Namespace
    ) -> None:
        iris = ns("iris")
        good = reference_profile(rows=10)
        wide = Tensor.from_numpy(np.zeros((10, 4), dtype=np.float32))
        short = Tensor.from_numpy(np.zeros(9, dtype=np.float32))
        bad = [
            msgspec.structs.replace(good, sample=wide),
            msgspec.structs.replace(good, predictions={"y": short}),
            msgspec.structs.replace(good, columns=["age", "age", "x"]),
        ]

        for profile in bad:
            with pytest.raises(InvalidInput):
                await register(registry, iris, reference_profile=profile)

        with pytest.raises(NotFound):
            await registry.get_model(GetModel(name=iris))

    async def test_an_idempotent_replay_answers_the_profiled_version(
        self, registry: RegistryService, ns: Namespace
    ) -> None:
        iris = ns("iris")
        profile = reference_profile()
        with use(CallContext(idempotency_key="profiled-1")):
            first = await register(registry, iris, seed=8, reference_profile=profile)
            replay = await register(registry, iris, seed=8, reference_profile=profile)

        assert replay == first
        assert first.has_reference_profile is True
        assert (await registry.get_model(GetModel(name=iris))).version_count == 1
        got = await registry.get_reference_profile(GetReferenceProfile(ref=f"{iris}:1"))
        assert_same_profile(got, profile)

    # --- idempotency ------------------------------------------------------------------------

    async def test_an_idempotency_key_registers_once(
        self, registry: RegistryService, ns: Namespace
    ) -> None:
        iris = ns("iris")
        with use(CallContext(idempotency_key="upload-1")):
            first = await register(registry, iris, seed=3)
            replay = await register(registry, iris, seed=3)
        without_key = await register(registry, iris, seed=3)
        with use(CallContext(idempotency_key="upload-1")):
            other_model = await register(registry, ns("other"), seed=3)

        assert replay == first
        assert without_key.version == 2
        assert other_model.version == 1
        assert (await registry.get_model(GetModel(name=iris))).version_count == 2

    async def test_concurrent_replays_of_one_key_register_once(
        self, registry: RegistryService, ns: Namespace
    ) -> None:
        iris = ns("iris")
        with use(CallContext(idempotency_key="upload-2")):
            infos = await asyncio.gather(*(register(registry, iris, seed=4) for _ in range(4)))

        assert {i.version for i in infos} == {1}
        assert (await registry.get_model(GetModel(name=iris))).version_count == 1

    async def test_an_idempotency_key_reused_with_other_bytes_conflicts(
        self, registry: RegistryService, ns: Namespace
    ) -> None:
        iris = ns("iris")
        with use(CallContext(idempotency_key="upload-3")):
            await register(registry, iris, seed=5)
            with pytest.raises(Conflict):
                await register(registry, iris, seed=6)

        assert (await registry.get_model(GetModel(name=iris))).version_count == 1

    # --- task, classes and references from rows ---------------------------------------------

    async def test_trained_versions_take_classes_from_lineage_and_task_from_profile(
        self, registry: RegistryService, ns: Namespace
    ) -> None:
        iris = ns("iris")
        profile = msgspec.structs.replace(reference_profile(), task="classification")
        lineage = Lineage(extra={"classes": '["no", "yes"]'})

        info = await register(registry, iris, lineage=lineage, reference_profile=profile)
        plain = await register(registry, iris, seed=1)

        assert (info.task, info.classes) == ("classification", ["no", "yes"])
        assert (plain.task, plain.classes) == (None, [])
        read = await registry.get_version(GetVersion(ref=f"{iris}:1"))
        assert (read.task, read.classes) == ("classification", ["no", "yes"])

    async def test_classes_must_match_the_probability_columns(
        self, registry: RegistryService, ns: Namespace
    ) -> None:
        iris = ns("iris")
        with pytest.raises(InvalidInput, match="3 classes"):
            await register(registry, iris, task="classification", classes=["a", "b", "c"])
        with pytest.raises(InvalidInput, match="classes"):
            await register(registry, iris, task="regression", classes=["a", "b"])
        with pytest.raises(NotFound):
            await registry.get_model(GetModel(name=iris))

    async def test_a_reference_from_rows_runs_the_model(
        self, registry: RegistryService, ns: Namespace
    ) -> None:
        iris = ns("iris")
        await register(registry, iris)
        rng = np.random.default_rng(3)
        x = rng.normal(size=(60, 3))
        columns = {f"x_{i}": Tensor.from_numpy(x[:, i]) for i in range(3)}

        info = await registry.set_reference(
            SetReference(
                name=iris, version=1, columns=columns, task="classification", classes=["a", "b"]
            )
        )

        assert info.has_reference_profile
        assert (info.task, info.classes) == ("classification", ["a", "b"])
        got = await registry.get_reference_profile(GetReferenceProfile(ref=iris))
        assert got.columns == ["x_0", "x_1", "x_2"]
        assert got.rows == 60
        assert got.task == "classification"
        assert got.predictions["y"].shape == (60, 2)

    async def test_a_reference_names_the_column_it_misses(
        self, registry: RegistryService, ns: Namespace
    ) -> None:
        iris = ns("iris")
        await register(registry, iris)
        columns = {"x_0": Tensor.from_numpy(np.zeros(5)), "x_2": Tensor.from_numpy(np.zeros(5))}
        texts = {**columns, "x_1": Tensor.from_numpy(np.array(["a"] * 5, dtype=object))}

        with pytest.raises(InvalidInput, match="'x_1'") as missing:
            await registry.set_reference(SetReference(name=iris, version=1, columns=columns))
        with pytest.raises(InvalidInput, match="'x_1' holds text"):
            await registry.set_reference(SetReference(name=iris, version=1, columns=texts))
        with pytest.raises(NotFound):
            await registry.set_reference(SetReference(name=iris, version=2, columns=columns))

        assert missing.value.details["column"] == "x_1"
        assert not (await registry.get_version(GetVersion(ref=iris))).has_reference_profile
