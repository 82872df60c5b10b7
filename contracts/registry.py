"""The registry contract: model versions, their ONNX artifacts, aliases and lineage."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Literal, Protocol

import msgspec

from contracts.common import (
    ByteSize,
    Count,
    Finite,
    IntegrityError,
    InvalidInput,
    Limit,
    Page,
    PositiveCount,
    Scope,
    Seed,
    Tensor,
    Version,
    method,
)

__all__ = [
    "RESERVED_ALIASES",
    "VERSION",
    "AliasChange",
    "AliasInfo",
    "ArchiveVersion",
    "ArtifactChunk",
    "ColumnProfile",
    "DeleteAlias",
    "DeleteVersion",
    "FetchArtifact",
    "GetAlias",
    "GetModel",
    "GetReferenceProfile",
    "GetVersion",
    "Histogram",
    "Lineage",
    "ListAliasHistory",
    "ListModels",
    "ListVersions",
    "ModelAliasChanged",
    "ModelInfo",
    "ModelVersionRegistered",
    "ReferenceProfile",
    "RegisterVersion",
    "RegistryService",
    "RollbackAlias",
    "SetAlias",
    "SetReference",
    "Signature",
    "Task",
    "TensorSpec",
    "UpdateModel",
    "VersionDeleted",
    "VersionInfo",
    "read_artifact",
]

VERSION = (1, 4)
"""Contract version ``(major, minor)``; remote calls refuse a different major.

1.2: numeric fields carry their bounds (versions, sizes, limits, chunk sizes, metrics).
1.3: alias history and rollback (``rollback_alias``, ``list_alias_history``, ``SetAlias.reason``).
1.4: a version's ``task`` and ``classes``; ``set_reference`` (a reference profile from rows).
"""

Task = Literal["classification", "regression"]
"""What a model predicts: class probabilities (and labels), or values."""

RESERVED_ALIASES = frozenset({"latest"})
"""Aliases no one may set: ``latest`` and ``v<n>`` read as something else."""


class TensorSpec(msgspec.Struct, frozen=True, kw_only=True):
    """One input or output of a model: name, Open Inference Protocol dtype, shape (-1 = dynamic)."""

    name: str
    dtype: str
    shape: list[int]


class Signature(msgspec.Struct, frozen=True, kw_only=True):
    """The inputs and outputs read from the ONNX graph."""

    inputs: list[TensorSpec]
    outputs: list[TensorSpec]


class Lineage(msgspec.Struct, frozen=True, kw_only=True):
    """Where a version came from; every field optional."""

    training_job_id: str | None = None
    dataset_digest: str | None = None
    feature_service: str | None = None
    transform_state: str | None = None
    extra: dict[str, str] = {}


class Histogram(msgspec.Struct, frozen=True, kw_only=True):
    """Counts of values in ``len(edges) - 1`` bins (the last bin includes its right edge)."""

    edges: list[float]
    counts: list[int]


class ColumnProfile(msgspec.Struct, frozen=True, kw_only=True):
    """One model input column of the training data.

    ``numerical`` columns carry a histogram, mean and std; ``categorical`` ones (few distinct
    values, e.g. one-hot columns) carry the share of each value (its text) in ``frequencies``.
    """

    name: str
    kind: Literal["numerical", "categorical"]
    histogram: Histogram | None = None
    frequencies: dict[str, float] = {}
    mean: float | None = None
    std: float | None = None


class ReferenceProfile(msgspec.Struct, frozen=True, kw_only=True):
    """What monitoring compares live traffic with: a seeded sample of training rows.

    ``sample`` holds at most 5,000 rows of the model input (float32 ``[n, len(columns)]``),
    ``predictions`` the model's outputs on them; ``profiles`` describe every input column over
    all ``rows`` training rows.
    """

    columns: list[str]
    sample: Tensor
    predictions: dict[str, Tensor] = {}
    profiles: list[ColumnProfile] = []
    rows: Count = 0
    task: Task | None = None


# --- requests -------------------------------------------------------------------------------


class RegisterVersion(msgspec.Struct, frozen=True, kw_only=True):
    """Register a new version of ``name`` from ONNX bytes (the model is created on first use)."""

    name: str
    artifact: bytes
    description: str = ""
    tags: dict[str, str] = {}
    metrics: dict[str, Finite] = {}
    params: dict[str, str] = {}
    lineage: Lineage = Lineage()
    reference_profile: ReferenceProfile | None = None
    """Stored with the version in one transaction; read it with ``get_reference_profile``."""
    task: Task | None = None
    """``None``: read from the graph (a ZipMap, a classifier node with class labels, or a
    probability tensor next to a label output make a classifier), else from the reference
    profile's ``task``."""
    classes: list[str] = []
    """Class labels as text, in the order of the probability output's columns. Empty: read
    from the graph (ZipMap or classifier node labels), else from ``lineage.extra["classes"]``
    (a JSON list, as training records it)."""

    @classmethod
    def from_path(
        cls,
        name: str,
        path: str | Path,
        *,
        description: str = "",
        tags: dict[str, str] | None = None,
        metrics: dict[str, float] | None = None,
        params: dict[str, str] | None = None,
        lineage: Lineage | None = None,
        task: Task | None = None,
        classes: list[str] | None = None,
    ) -> RegisterVersion:
        """Read the ONNX file at ``path`` (on the caller's machine) into a request."""
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise InvalidInput(f"cannot read model file {str(path)!r}: {exc.strerror}") from exc
        return cls(
            name=name,
            artifact=data,
            description=description,
            tags=tags or {},
            metrics=metrics or {},
            params=params or {},
            lineage=lineage or Lineage(),
            task=task,
            classes=classes or [],
        )


class GetModel(msgspec.Struct, frozen=True, kw_only=True):
    """Look a model up by name."""

    name: str


class UpdateModel(msgspec.Struct, frozen=True, kw_only=True):
    """Change a model's description and/or tags (``None`` leaves a field as it is)."""

    name: str
    description: str | None = None
    tags: dict[str, str] | None = None


class GetVersion(msgspec.Struct, frozen=True, kw_only=True):
    """Resolve a model reference (``name:N``, ``name@alias``, ``name``) to a version."""

    ref: str


class ListModels(msgspec.Struct, frozen=True, kw_only=True):
    """One page of models, by name; optionally filtered by name prefix and tags (all must match)."""

    limit: Limit = 50
    cursor: str | None = None
    prefix: str | None = None
    tags: dict[str, str] = {}


class ListVersions(msgspec.Struct, frozen=True, kw_only=True):
    """One page of a model's versions, newest first."""

    name: str
    limit: Limit = 50
    cursor: str | None = None
    include_archived: bool = True
    tags: dict[str, str] = {}


class SetAlias(msgspec.Struct, frozen=True, kw_only=True):
    """Point ``alias`` at ``version``; moves it atomically if it exists."""

    name: str
    alias: str
    version: Version
    reason: str = ""
    """Why it moved, kept in the alias history."""


class GetAlias(msgspec.Struct, frozen=True, kw_only=True):
    """Read an alias."""

    name: str
    alias: str


class DeleteAlias(msgspec.Struct, frozen=True, kw_only=True):
    """Remove an alias."""

    name: str
    alias: str


class RollbackAlias(msgspec.Struct, frozen=True, kw_only=True):
    """Point ``alias`` back at the version it pointed at before its last move (a rollback of a
    rollback goes one step further back, it does not redo)."""

    name: str
    alias: str = "champion"
    reason: str = ""
    """Why, kept in the alias history."""


class ListAliasHistory(msgspec.Struct, frozen=True, kw_only=True):
    """One page of an alias's changes, newest first."""

    name: str
    alias: str = "champion"
    limit: Limit = 50
    cursor: str | None = None


class AliasChange(msgspec.Struct, frozen=True, kw_only=True):
    """One change of an alias: ``version`` is where it points after (``None``: deleted),
    ``previous_version`` where it pointed before (``None``: it was not set)."""

    name: str
    alias: str
    action: Literal["set", "delete", "rollback"]
    version: Version | None = None
    previous_version: Version | None = None
    reason: str = ""
    at: datetime


class ArchiveVersion(msgspec.Struct, frozen=True, kw_only=True):
    """Archive (or with ``archived=False`` restore) a version."""

    name: str
    version: Version
    archived: bool = True


class DeleteVersion(msgspec.Struct, frozen=True, kw_only=True):
    """Delete a version; its artifact goes when no other version shares the content."""

    name: str
    version: Version


class GetReferenceProfile(msgspec.Struct, frozen=True, kw_only=True):
    """The reference profile of the version a reference resolves to."""

    ref: str


class SetReference(msgspec.Struct, frozen=True, kw_only=True):
    """Give version ``name:version`` a reference profile built from rows of its inputs.

    ``columns`` maps column names to one tensor each, one entry per row (all the same length).
    A model input is fed from the column named after it (``[rows]`` or ``[rows, k]``), or, for
    an input of shape ``[rows, k]``, from ``k`` columns: the names in the version's
    ``lineage.extra["columns"]`` (a JSON list) when it has a single input, else
    ``<input>_0`` ... ``<input>_<k-1>``. A ``label`` column is not an input: for a classifier
    its values must be among the classes. The registry runs the model on the rows and stores
    the profile as training does, replacing any earlier one. ``task`` and ``classes``, when
    given, become the version's (metadata; the model itself stays as registered).
    """

    name: str
    version: Version
    columns: dict[str, Tensor]
    task: Task | None = None
    classes: list[str] = []
    seed: Seed = 0
    """Which rows the profile's sample keeps when there are more than 5,000."""


class FetchArtifact(msgspec.Struct, frozen=True, kw_only=True):
    """Stream the ONNX bytes of the version a reference resolves to."""

    ref: str
    chunk_size: PositiveCount = 1 << 20


# --- answers --------------------------------------------------------------------------------


class VersionInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A registered, immutable model version."""

    name: str
    version: Version
    sha256: str
    size: ByteSize
    signature: Signature
    status: Literal["ready", "archived"]
    description: str = ""
    tags: dict[str, str] = {}
    metrics: dict[str, float] = {}
    params: dict[str, str] = {}
    lineage: Lineage = Lineage()
    aliases: list[str] = []
    created_at: datetime
    has_reference_profile: bool = False
    task: Task | None = None
    classes: list[str] = []
    """Class labels as text, in the order of the probability output's columns."""


class ModelInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A model: its description, tags, aliases (alias -> version) and version counts."""

    name: str
    description: str = ""
    tags: dict[str, str] = {}
    aliases: dict[str, Version] = {}
    latest_version: Version | None = None
    version_count: Count = 0
    created_at: datetime
    updated_at: datetime


class AliasInfo(msgspec.Struct, frozen=True, kw_only=True):
    """An alias and the version it points at."""

    name: str
    alias: str
    version: Version


class VersionDeleted(msgspec.Struct, frozen=True, kw_only=True):
    """The answer to a deletion; ``artifact_deleted`` says whether the bytes went too."""

    name: str
    version: Version
    artifact_deleted: bool


class ArtifactChunk(msgspec.Struct, frozen=True, kw_only=True):
    """One piece of an artifact stream; every chunk carries the whole artifact's hash and size."""

    name: str
    version: Version
    sha256: str
    size: ByteSize
    offset: ByteSize
    data: bytes


# --- events ---------------------------------------------------------------------------------


class ModelVersionRegistered(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """A new version was registered."""

    name: str
    version: Version
    sha256: str
    size: ByteSize


class ModelAliasChanged(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """An alias was set, moved or removed (``version`` is ``None`` when removed)."""

    name: str
    alias: str
    version: Version | None
    previous_version: Version | None


# --- the service ----------------------------------------------------------------------------


class RegistryService(Protocol):
    """Model versions and artifacts. Names follow :func:`contracts.common.validate_name`."""

    @method(scope=Scope.TRAIN)
    async def register_version(self, request: RegisterVersion) -> VersionInfo:
        """Parse, hash and store the ONNX bytes; allocate the next version number."""
        ...

    @method(scope=Scope.READ, idempotent=True)
    async def get_model(self, request: GetModel) -> ModelInfo:
        """A model by name; ``NotFound`` if there is none."""
        ...

    @method(scope=Scope.ADMIN, idempotent=True)
    async def update_model(self, request: UpdateModel) -> ModelInfo:
        """Change a model's description or tags."""
        ...

    @method(scope=Scope.READ, idempotent=True)
    async def list_models(self, request: ListModels) -> Page[ModelInfo]:
        """One page of models ordered by name."""
        ...

    @method(scope=Scope.READ, idempotent=True)
    async def get_version(self, request: GetVersion) -> VersionInfo:
        """Resolve ``name:N``, ``name@alias`` or a bare ``name`` (champion, else highest)."""
        ...

    @method(scope=Scope.READ, idempotent=True)
    async def list_versions(self, request: ListVersions) -> Page[VersionInfo]:
        """One page of a model's versions, newest first."""
        ...

    @method(scope=Scope.ADMIN, idempotent=True)
    async def set_alias(self, request: SetAlias) -> AliasInfo:
        """Point an alias at a version (``latest`` and ``v<n>`` are reserved)."""
        ...

    @method(scope=Scope.READ, idempotent=True)
    async def get_alias(self, request: GetAlias) -> AliasInfo:
        """Read an alias; ``NotFound`` if it is not set."""
        ...

    @method(scope=Scope.ADMIN)
    async def delete_alias(self, request: DeleteAlias) -> AliasInfo:
        """Remove an alias and answer what it pointed at."""
        ...

    @method(scope=Scope.ADMIN)
    async def rollback_alias(self, request: RollbackAlias) -> AliasChange:
        """Move an alias back to its previous version, the reason recorded; ``Conflict`` when
        its history holds no earlier version, or that version is archived or deleted."""
        ...

    @method(scope=Scope.READ, idempotent=True)
    async def list_alias_history(self, request: ListAliasHistory) -> Page[AliasChange]:
        """One page of an alias's changes, newest first (kept since contract 1.3)."""
        ...

    @method(scope=Scope.ADMIN, idempotent=True)
    async def archive_version(self, request: ArchiveVersion) -> VersionInfo:
        """Archive or restore a version; archived versions no longer resolve from a bare name."""
        ...

    @method(scope=Scope.ADMIN)
    async def delete_version(self, request: DeleteVersion) -> VersionDeleted:
        """Delete a version no alias points at; ``Conflict`` names the aliases otherwise."""
        ...

    @method(scope=Scope.READ, idempotent=True)
    async def get_reference_profile(self, request: GetReferenceProfile) -> ReferenceProfile:
        """The version's reference profile; ``NotFound`` when it was registered without one."""
        ...

    @method(scope=Scope.TRAIN, idempotent=True)
    async def set_reference(self, request: SetReference) -> VersionInfo:
        """Run the version on rows of its inputs and store their reference profile (replacing
        any earlier one); ``InvalidInput`` names a missing or mistyped column."""
        ...

    @method(scope=Scope.READ, idempotent=True, streaming=True)
    def fetch_artifact(self, request: FetchArtifact) -> AsyncIterator[ArtifactChunk]:
        """Stream the artifact bytes in chunks; use :func:`read_artifact` to verify the hash."""
        ...


async def read_artifact(chunks: AsyncIterator[ArtifactChunk]) -> tuple[ArtifactChunk, bytes]:
    """Collect an artifact stream and verify its sha256 and size.

    Answers the first chunk (for name, version and hash) and the bytes; raises
    :class:`IntegrityError` when the content does not match what the registry recorded.
    """
    digest = hashlib.sha256()
    parts: list[bytes] = []
    first: ArtifactChunk | None = None
    async for chunk in chunks:
        first = first or chunk
        digest.update(chunk.data)
        parts.append(chunk.data)
    if first is None:
        raise IntegrityError("artifact stream ended before any data arrived")
    data = b"".join(parts)
    if len(data) != first.size or digest.hexdigest() != first.sha256:
        raise IntegrityError(
            f"artifact of {first.name}:{first.version} does not match its recorded sha256",
            details={"expected": first.sha256, "actual": digest.hexdigest(), "size": len(data)},
        )
    return first, data
