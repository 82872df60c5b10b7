"""Swagger UI served from files that ship with Quarry: ``/schema/swagger`` works offline.

litestar's Swagger plugin loads its scripts, stylesheet and icon from a public CDN, so on a host
without internet the page is blank. :class:`LocalSwaggerRenderPlugin` points the same page at
``<schema path>/assets/...``, answered from ``app/kernel/http/static/swagger-ui/`` (the minified
``swagger-ui-dist`` files, with their licence: see ``VERSION`` there).
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

from litestar import Request, Response, Router, get
from litestar.exceptions import NotFoundException
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.params import FromPath

__all__ = ["ASSETS", "LocalSwaggerRenderPlugin"]

ASSETS = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui-standalone-preset.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "favicon-32x32.png": "image/png",
    "LICENSE": "text/plain",
}
"""The files served under ``<schema path>/assets/``, with their media types."""

_CACHE = "public, max-age=86400"


@cache
def _asset(name: str) -> bytes:
    folder = resources.files("app.kernel.http") / "static" / "swagger-ui"
    return (folder / name).read_bytes()


def _assets_route() -> Any:
    @get("/assets/{name:str}", include_in_schema=False, sync_to_thread=False)
    def swagger_asset(name: FromPath[str]) -> Response[bytes]:
        """One of the Swagger UI files (404 for any other name)."""
        media_type = ASSETS.get(name)
        if media_type is None:
            raise NotFoundException(f"no docs asset named {name!r}")
        return Response(_asset(name), media_type=media_type, headers={"cache-control": _CACHE})

    return swagger_asset


class LocalSwaggerRenderPlugin(SwaggerRenderPlugin):
    """litestar's Swagger UI page, its scripts, stylesheet and icon served by this app."""

    def __init__(self, path: str = "/swagger", **kwargs: Any) -> None:
        super().__init__(path=path, **kwargs)
        self._point_at("/schema")

    def _point_at(self, schema_path: str) -> None:
        base = f"{schema_path.rstrip('/')}/assets"
        self.js_url = f"{base}/swagger-ui-bundle.js"
        self.css_url = f"{base}/swagger-ui.css"
        self.standalone_preset_js_url = f"{base}/swagger-ui-standalone-preset.js"
        self.favicon = f"<link rel='icon' type='image/png' href='{base}/favicon-32x32.png'>"

    def receive_router(self, router: Router) -> None:
        """Serve the assets beside the schema, wherever the schema router is mounted."""
        self._point_at(router.path)
        router.register(_assets_route())
        super().receive_router(router)

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        """The page, without the online validator badge (it would call an outside host)."""
        page = super().render(request, openapi_schema)
        return page.replace(b"deepLinking: true,", b"deepLinking: true,\n validatorUrl: null,", 1)
