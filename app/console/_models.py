"""``/ui/models``: models, their versions and aliases; move an alias, roll it back, archive."""

from __future__ import annotations

from typing import Any

from litestar import Request, get, post
from litestar.params import FromPath, FromQuery
from litestar.response import Redirect, Response

from app.console._clients import Clients
from app.console._forms import done, scopes_of, text, whole_number
from app.console._render import list_page, page
from app.console._session import checked_form
from contracts.registry import (
    ArchiveVersion,
    GetModel,
    GetVersion,
    ListAliasHistory,
    ListModels,
    ListVersions,
    RegistryService,
    RollbackAlias,
    SetAlias,
)

__all__ = ["model_handlers"]

PAGE = 50
SCOPES = scopes_of(RegistryService, "set_alias", "rollback_alias", "archive_version")


def model_handlers(q: Clients) -> list[Any]:
    """The models pages and their actions."""

    models = list_page(
        "/models",
        "models.html",
        "Models",
        lambda cursor: q.registry.list_models(ListModels(limit=PAGE, cursor=cursor)),
    )

    @get("/models/{name:str}")
    async def model(
        request: Request[Any, Any, Any], name: FromPath[str], cursor: FromQuery[str | None] = None
    ) -> Response[str]:
        info = await q.registry.get_model(GetModel(name=name))
        versions = await q.registry.list_versions(
            ListVersions(name=name, limit=PAGE, cursor=cursor or None)
        )
        history = {
            alias: (
                await q.registry.list_alias_history(
                    ListAliasHistory(name=name, alias=alias, limit=5)
                )
            ).items
            for alias in sorted(info.aliases)
        }
        return page(
            request,
            "model.html",
            title=f"Model {name}",
            model=info,
            versions=versions,
            history=history,
            scopes=SCOPES,
        )

    @get("/models/{name:str}/versions/{version:int}")
    async def version(
        request: Request[Any, Any, Any], name: FromPath[str], version: FromPath[int]
    ) -> Response[str]:
        info = await q.registry.get_version(GetVersion(ref=f"{name}:{version}"))
        return page(request, "version.html", title=f"{name}:{version}", version=info)

    @post("/models/{name:str}/aliases", opt={"scope": SCOPES["set_alias"]})
    async def move_alias(request: Request[Any, Any, Any], name: FromPath[str]) -> Redirect:
        form = await checked_form(request)
        alias, target = text(form, "alias"), whole_number(form, "version")
        await q.registry.set_alias(
            SetAlias(
                name=name, alias=alias, version=target, reason=text(form, "reason", required=False)
            )
        )
        return done(f"/ui/models/{name}", f"{name}@{alias} now points at version {target}")

    @post(
        "/models/{name:str}/aliases/{alias:str}/rollback",
        opt={"scope": SCOPES["rollback_alias"]},
    )
    async def roll_back(
        request: Request[Any, Any, Any], name: FromPath[str], alias: FromPath[str]
    ) -> Redirect:
        form = await checked_form(request)
        change = await q.registry.rollback_alias(
            RollbackAlias(name=name, alias=alias, reason=text(form, "reason", required=False))
        )
        return done(f"/ui/models/{name}", f"{name}@{alias} rolled back to version {change.version}")

    @post(
        "/models/{name:str}/versions/{version:int}/archive",
        opt={"scope": SCOPES["archive_version"]},
    )
    async def archive(
        request: Request[Any, Any, Any], name: FromPath[str], version: FromPath[int]
    ) -> Redirect:
        form = await checked_form(request)
        archived = form.get("archived", "1") != "0"
        await q.registry.archive_version(
            ArchiveVersion(name=name, version=version, archived=archived)
        )
        what = "archived" if archived else "restored"
        return done(f"/ui/models/{name}", f"{name}:{version} {what}")

    return [models, model, version, move_alias, roll_back, archive]
