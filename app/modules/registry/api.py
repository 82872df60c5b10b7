"""The registry's public HTTP routes, under ``/v1/registry``.

Handlers only parse and check input, call the :class:`~contracts.registry.RegistryService` they
are given (local or a remote proxy) and answer its Structs. Each one carries the scope of the
contract method it calls in ``opt["scope"]``, which the auth middleware reads.

Archiving is an action, not a field edit (a version is otherwise immutable):
``POST .../versions/{version}/archive`` archives and ``POST .../versions/{version}/restore``
restores; both answer the version.

``GET .../versions/{version}/reference-profile`` answers the profile stored with a version as
plain JSON (see :class:`~app.modules.registry.profiles.ReferenceProfileView`), 404 when the
version was registered without one. ``PUT .../versions/{version}/reference`` builds one from rows
of the model's inputs: JSON ``{"rows": [{column: value}, ...]}`` or a CSV or Parquet file in the
multipart field ``file`` (see :mod:`~app.modules.registry.reference_rows`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Annotated, Any

import msgspec
from litestar import Request, Response, Router, delete, get, patch, post, put
from litestar.datastructures import UploadFile
from litestar.enums import RequestEncodingType
from litestar.openapi.spec import (
    OpenAPIMediaType,
    OpenAPIType,
    Operation,
    RequestBody,
    Schema,
)
from litestar.params import (
    FromQuery,
    HeaderParameter,
    JSONBody,
    PathParameter,
    QueryParameter,
)
from litestar.response import Stream

from app.kernel import context
from app.kernel.http.bodies import checked_param, from_params
from app.kernel.http.openapi import NoBody, documented, error_responses
from app.kernel.settings import Settings
from app.modules.registry.profiles import ReferenceProfileView, view
from app.modules.registry.reference_rows import (
    file_form,
    read_reference_rows,
    reference_operation,
    tensors,
)
from app.modules.registry.settings import RegistrySettings
from app.modules.registry.validation import MAX_TAG_KEY, MAX_TAG_VALUE, MAX_TEXT
from contracts.common import (
    MAX_INT32,
    MAX_PAGE,
    NAME_PATTERN,
    InvalidInput,
    Page,
    Version,
    method_info,
    validate_name,
)
from contracts.registry import (
    AliasChange,
    AliasInfo,
    ArchiveVersion,
    DeleteAlias,
    DeleteVersion,
    FetchArtifact,
    GetAlias,
    GetModel,
    GetReferenceProfile,
    GetVersion,
    Lineage,
    ListAliasHistory,
    ListModels,
    ListVersions,
    ModelInfo,
    RegisterVersion,
    RegistryService,
    RollbackAlias,
    SetAlias,
    SetReference,
    Task,
    UpdateModel,
    VersionDeleted,
    VersionInfo,
)

__all__ = [
    "AliasTarget",
    "ModelPatch",
    "RollbackBody",
    "UploadOperation",
    "VersionMetadata",
    "routes",
]


_NO_NUL = "^[^\\x00]*$"
Tags = Annotated[
    dict[str, str],
    msgspec.Meta(
        extra_json_schema={
            "extra": {
                # plain JSON: litestar copies these into the document as they are
                "property_names": {"minLength": 1, "maxLength": MAX_TAG_KEY, "pattern": _NO_NUL},
                "additional_properties": {
                    "type": "string",
                    "maxLength": MAX_TAG_VALUE,
                    "pattern": _NO_NUL,
                },
            }
        }
    ),
]
"""Tags as the service checks them: keys of 1-250 characters, values of at most 5,000, no NUL."""


class ModelPatch(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The body of ``PATCH /v1/registry/models/{name}``: fields left out stay as they are."""

    description: Annotated[str, msgspec.Meta(max_length=MAX_TEXT, pattern=_NO_NUL)] | None = None
    tags: Tags | None = None


Reason = Annotated[str, msgspec.Meta(max_length=20_000, pattern="^[^\\x00]*$")]
"""Why an alias moved: free text without NUL, as the service checks it."""


class AliasTarget(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The body of ``PUT /v1/registry/models/{name}/aliases/{alias}``."""

    version: Version
    reason: Reason = ""


class RollbackBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The body of ``POST /v1/registry/models/{name}/rollback``."""

    alias: Annotated[
        str,
        msgspec.Meta(
            max_length=128,
            pattern="^(?![Ll][Aa][Tt][Ee][Ss][Tt]$)(?![vV][0-9]+$)" + NAME_PATTERN[1:],
        ),
    ] = "champion"
    reason: Reason = ""


class VersionMetadata(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The optional ``metadata`` field of an upload: a JSON object with these keys."""

    description: str = ""
    tags: dict[str, str] = {}
    metrics: dict[str, float] = {}
    params: dict[str, str] = {}
    lineage: Lineage = Lineage()
    task: Task | None = None
    classes: list[str] = []


_METADATA = msgspec.json.Decoder(VersionMetadata)


@dataclass
class UploadOperation(Operation):
    """OpenAPI for the upload route, whose multipart body the handler reads itself."""

    def __post_init__(self) -> None:
        form = file_form(
            "The ONNX model.",
            "Optional JSON object: description, tags, metrics, params, lineage, task, classes.",
        )
        self.request_body = RequestBody(
            required=True, content={"multipart/form-data": OpenAPIMediaType(schema=form)}
        )


# Path and query parameters, documented with the bounds of the contract types they are checked
# against (names and aliases: the rules the service checks, for remote callers too).
_NAME = {"pattern": NAME_PATTERN, "max_length": 128}
_ALIAS = {"pattern": "^(?![Ll][Aa][Tt][Ee][Ss][Tt]$)(?![vV][0-9]+$)" + NAME_PATTERN[1:]}
ModelName = Annotated[str, PathParameter(description="The model's name.", schema_extra=_NAME)]
AliasName = Annotated[
    str,
    PathParameter(
        description="The alias ('latest' and 'v<number>' are reserved).",
        schema_extra={**_NAME, **_ALIAS},
    ),
]
VersionNumber = Annotated[
    int,
    PathParameter(
        description="A version number.", schema_extra={"minimum": 1, "maximum": MAX_INT32}
    ),
]
Limit = Annotated[
    int,
    QueryParameter(description="Page size.", schema_extra={"minimum": 1, "maximum": MAX_PAGE}),
]
IdempotencyKey = Annotated[
    str | None,
    HeaderParameter(
        name="Idempotency-Key",
        required=False,
        description="Replay-safe uploads.",
        schema_extra={"min_length": 1, "max_length": 200},
    ),
]


def _opt(contract_method: Callable[..., Any]) -> dict[str, Any]:
    """The route options of a handler calling ``contract_method``: its scope."""
    info = method_info(contract_method)
    if info is None:  # pragma: no cover - every contract method carries a marker
        raise TypeError(f"{contract_method.__qualname__} has no @method marker")
    return {"scope": info.scope.value}


def routes(service: RegistryService, settings: Settings) -> list[Router]:
    """The registry's route handlers, bound to ``service``, in one router at ``/v1/registry``."""
    handlers = [
        *_model_handlers(service),
        *_version_handlers(service, settings),
        *_alias_handlers(service),
    ]
    return [Router(path="/v1/registry", route_handlers=handlers, tags=["registry"])]


def _model_handlers(service: RegistryService) -> list[Any]:
    @get("/models", opt=_opt(RegistryService.list_models))
    async def list_models(
        limit: Limit = 50,
        cursor: FromQuery[str | None] = None,
        prefix: FromQuery[str | None] = None,
        tag: Annotated[
            list[str] | None,
            QueryParameter(
                description="key=value; repeat to match several",
                schema_extra={"items": Schema(type=OpenAPIType.STRING, pattern="^[^=]+=")},
            ),
        ] = None,
    ) -> Page[ModelInfo]:
        """One page of models ordered by name."""
        request = from_params(
            ListModels, limit=limit, cursor=cursor, prefix=prefix, tags=_tag_filter(tag)
        )
        return await service.list_models(request)

    @get("/models/{name:str}", opt=_opt(RegistryService.get_model))
    async def get_model(name: ModelName) -> ModelInfo:
        """A model, its aliases and version counts."""
        return await service.get_model(GetModel(name=name))

    @patch("/models/{name:str}", opt=_opt(RegistryService.update_model))
    async def update_model(name: ModelName, data: JSONBody[ModelPatch]) -> ModelInfo:
        """Change a model's description and/or tags."""
        request = UpdateModel(name=name, description=data.description, tags=data.tags)
        return await service.update_model(request)

    return [list_models, get_model, update_model]


def _version_handlers(service: RegistryService, settings: Settings) -> list[Any]:
    @get("/models/{name:str}/versions", opt=_opt(RegistryService.list_versions))
    async def list_versions(
        name: ModelName,
        limit: Limit = 50,
        cursor: FromQuery[str | None] = None,
        include_archived: FromQuery[bool] = True,
    ) -> Page[VersionInfo]:
        """One page of a model's versions, newest first."""
        request = from_params(
            ListVersions, name=name, limit=limit, cursor=cursor, include_archived=include_archived
        )
        return await service.list_versions(request)

    @post(
        "/models/{name:str}/versions",
        opt=_opt(RegistryService.register_version),
        request_max_body_size=settings.module_config(RegistrySettings).max_upload_bytes,
        status_code=201,
        operation_class=UploadOperation,
    )
    async def register_version(
        name: ModelName, request: Request[Any, Any, Any], idempotency_key: IdempotencyKey = None
    ) -> VersionInfo:
        """Register a new version from an ONNX file (multipart field ``file``)."""
        registration = await _registration(name, request)
        call = context.current()
        if idempotency_key and call.idempotency_key is None:
            with context.use(msgspec.structs.replace(call, idempotency_key=idempotency_key)):
                return await service.register_version(registration)
        return await service.register_version(registration)

    @get("/models/{name:str}/versions/{version:int}", opt=_opt(RegistryService.get_version))
    async def get_version(name: ModelName, version: VersionNumber) -> VersionInfo:
        """One version (archived ones included)."""
        return await service.get_version(GetVersion(ref=_ref(name, version)))

    @post(
        "/models/{name:str}/versions/{version:int}/archive",
        opt=_opt(RegistryService.archive_version),
        status_code=200,
        **documented(body=NoBody, body_required=False, errors=(409,)),
    )
    async def archive_version(name: ModelName, version: VersionNumber) -> VersionInfo:
        """Archive a version: bare names stop resolving to it; ``name:N`` still does."""
        request = from_params(ArchiveVersion, name=name, version=version)
        return await service.archive_version(request)

    @post(
        "/models/{name:str}/versions/{version:int}/restore",
        opt=_opt(RegistryService.archive_version),
        status_code=200,
        **documented(body=NoBody, body_required=False),
    )
    async def restore_version(name: ModelName, version: VersionNumber) -> VersionInfo:
        """Restore an archived version."""
        request = from_params(ArchiveVersion, name=name, version=version, archived=False)
        return await service.archive_version(request)

    @delete(
        "/models/{name:str}/versions/{version:int}",
        opt=_opt(RegistryService.delete_version),
        status_code=200,
        responses=error_responses(409),
    )
    async def delete_version(name: ModelName, version: VersionNumber) -> VersionDeleted:
        """Delete a version no alias points at."""
        return await service.delete_version(from_params(DeleteVersion, name=name, version=version))

    @get(
        "/models/{name:str}/versions/{version:int}/artifact",
        opt=_opt(RegistryService.fetch_artifact),
        media_type="application/octet-stream",
    )
    async def download_artifact(
        name: ModelName, version: VersionNumber, request: Request[Any, Any, Any]
    ) -> Response[Any]:
        """The ONNX bytes, streamed, with their sha256 as ETag and ``X-Checksum-Sha256``.

        The version is read first, so a missing one answers 404 before any byte is sent; the
        stream itself is created and drained inside the response's task (an async generator
        must not be started in one context and finished in another).
        """
        ref = _ref(name, version)
        info = await service.get_version(GetVersion(ref=ref))
        etag = f'"{info.sha256}"'
        headers = {"ETag": etag, "X-Checksum-Sha256": info.sha256}
        if etag in (t.strip() for t in request.headers.get("if-none-match", "").split(",")):
            return Response(content=b"", status_code=304, headers=headers)
        headers |= {
            "Content-Length": str(info.size),
            "Content-Disposition": f'attachment; filename="{name}-{version}.onnx"',
        }
        body = _bytes(service, FetchArtifact(ref=ref))
        return Stream(body, media_type="application/octet-stream", headers=headers)

    return [
        list_versions,
        register_version,
        get_version,
        archive_version,
        restore_version,
        delete_version,
        download_artifact,
        _reference_profile_handler(service),
        _reference_upload_handler(service, settings),
    ]


def _reference_upload_handler(service: RegistryService, settings: Settings) -> Any:
    @put(
        "/models/{name:str}/versions/{version:int}/reference",
        opt=_opt(RegistryService.set_reference),
        request_max_body_size=settings.max_body_bytes,
        **reference_operation(),
    )
    async def set_reference(
        name: ModelName, version: VersionNumber, request: Request[Any, Any, Any]
    ) -> VersionInfo:
        """Give a version a reference profile from rows of its inputs (replacing any earlier one).

        Quarry runs the model on the rows and profiles them as training does; drift checks
        then compare traffic with them. Rows come as JSON (``{"rows": [{column: value}]}``,
        with optional ``task``, ``classes`` and ``seed``) or as a CSV or Parquet file in the
        multipart field ``file`` (with an optional JSON ``metadata`` field holding those).
        An input ``x`` of shape ``[N, k]`` is fed from the columns recorded in the version's
        ``lineage.extra["columns"]``, else ``x_0`` ... ``x_<k-1>``, or from one list-valued
        column ``x``; an optional ``label`` column must hold classes of the model. A missing
        column, a text column for a numeric input, or no rows answer 400 naming the column.
        """
        _ref(name, version)  # a valid name and version number before the body is read
        columns, meta = await read_reference_rows(request)
        return await service.set_reference(
            SetReference(
                name=name,
                version=version,
                columns=tensors(columns),
                task=meta.task,
                classes=meta.classes,
                seed=meta.seed,
            )
        )

    return set_reference


def _reference_profile_handler(service: RegistryService) -> Any:
    @get(
        "/models/{name:str}/versions/{version:int}/reference-profile",
        opt=_opt(RegistryService.get_reference_profile),
    )
    async def get_reference_profile(
        name: ModelName, version: VersionNumber
    ) -> ReferenceProfileView:
        """The reference profile stored with a version; 404 when it has none.

        JSON, not tensors: ``sample`` is a list of rows, each a list of floats in ``columns``
        order (non-finite values read as ``null``); ``predictions`` maps each model output to
        ``{"dtype", "shape", "values"}`` with ``values`` nested lists; ``profiles``, ``rows``
        and ``task`` are as in :class:`contracts.registry.ReferenceProfile`.
        """
        profile = await service.get_reference_profile(GetReferenceProfile(ref=_ref(name, version)))
        return view(name, version, profile)

    return get_reference_profile


def _alias_handlers(service: RegistryService) -> list[Any]:
    path = "/models/{name:str}/aliases/{alias:str}"

    @get(path, opt=_opt(RegistryService.get_alias))
    async def get_alias(name: ModelName, alias: AliasName) -> AliasInfo:
        """The version an alias points at."""
        return await service.get_alias(GetAlias(name=name, alias=alias))

    @put(path, opt=_opt(RegistryService.set_alias), responses=error_responses(409))
    async def set_alias(
        name: ModelName, alias: AliasName, data: JSONBody[AliasTarget]
    ) -> AliasInfo:
        """Point an alias at a version, moving it if it exists (``reason`` goes in its history)."""
        move = SetAlias(name=name, alias=alias, version=data.version, reason=data.reason)
        return await service.set_alias(move)

    @delete(path, opt=_opt(RegistryService.delete_alias), status_code=200)
    async def delete_alias(name: ModelName, alias: AliasName) -> AliasInfo:
        """Remove an alias; answers the version it pointed at."""
        return await service.delete_alias(DeleteAlias(name=name, alias=alias))

    @get(f"{path}/history", opt=_opt(RegistryService.list_alias_history))
    async def alias_history(
        name: ModelName, alias: AliasName, limit: Limit = 50, cursor: FromQuery[str | None] = None
    ) -> Page[AliasChange]:
        """One page of an alias's moves (set, delete, rollback) with their reasons, newest first."""
        asked = from_params(ListAliasHistory, name=name, alias=alias, limit=limit, cursor=cursor)
        return await service.list_alias_history(asked)

    @post(
        "/models/{name:str}/rollback",
        opt=_opt(RegistryService.rollback_alias),
        status_code=200,
        responses=error_responses(409),
    )
    async def rollback(name: ModelName, data: JSONBody[RollbackBody]) -> AliasChange:
        """Move an alias (default ``champion``) back to the version it pointed at before its
        last move, with the reason recorded in its history; deployments and bare names that
        follow it follow. 409 when its history holds no earlier live version."""
        asked = RollbackAlias(name=name, alias=data.alias, reason=data.reason)
        return await service.rollback_alias(asked)

    return [get_alias, set_alias, delete_alias, alias_history, rollback]


# --- helpers --------------------------------------------------------------------------------


async def _registration(name: str, request: Request[Any, Any, Any]) -> RegisterVersion:
    if request.content_type[0] != RequestEncodingType.MULTI_PART:
        raise _no_file()
    try:
        form = await request.form()
    except UnicodeDecodeError:
        raise InvalidInput(
            "a multipart field holds bytes that are not text: send the model as a file part"
            " (with a filename) in field 'file'",
            details={"field": "file"},
        ) from None
    uploads = [v for v in form.values() if isinstance(v, UploadFile)]
    try:
        files = form.getall("file", [])
        if len(files) != 1 or not isinstance(files[0], UploadFile):
            raise (
                _no_file()
                if not files
                else InvalidInput(
                    "send exactly one file part named 'file'", details={"field": "file"}
                )
            )
        artifact = await files[0].read()
        meta = _metadata(form.getall("metadata", []))
    finally:
        for upload in uploads:
            await upload.close()
    return RegisterVersion(
        name=name,
        artifact=artifact,
        description=meta.description,
        tags=meta.tags,
        metrics=meta.metrics,
        params=meta.params,
        lineage=meta.lineage,
        task=meta.task,
        classes=meta.classes,
    )


def _no_file() -> InvalidInput:
    return InvalidInput(
        "expected multipart/form-data with the ONNX model as a file in field 'file'",
        details={"field": "file"},
    )


def _metadata(values: list[Any]) -> VersionMetadata:
    if len(values) > 1:
        raise InvalidInput("send at most one field 'metadata'", details={"field": "metadata"})
    raw = values[0] if values else ""
    if isinstance(raw, UploadFile):
        raw = raw.file.read()
    if raw in ("", b""):
        return VersionMetadata()
    try:
        return _METADATA.decode(raw)
    except msgspec.DecodeError as exc:
        raise InvalidInput(
            f"field 'metadata' is not valid: {exc}; expected a JSON object with description,"
            " tags, metrics, params and lineage",
            details={"field": "metadata"},
        ) from None


def _tag_filter(pairs: list[str] | None) -> dict[str, str]:
    tags: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidInput(
                f"invalid tag filter {pair!r}: expected key=value", details={"field": "tag"}
            )
        tags[key] = value
    return tags


def _ref(name: str, version: int) -> str:
    checked_param(version, Version, name="version")
    return f"{validate_name(name, what='model name')}:{version}"


async def _bytes(service: RegistryService, request: FetchArtifact) -> AsyncIterator[bytes]:
    chunks = service.fetch_artifact(request)
    try:
        async for chunk in chunks:
            yield chunk.data
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()
