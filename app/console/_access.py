"""Logging in with an API key, and out."""

from __future__ import annotations

from typing import Any

from litestar import Request, get, post
from litestar.params import FromQuery
from litestar.response import Redirect, Response

from app.console._render import page
from app.console._session import (
    CSRF_COOKIE,
    KEY_COOKIE,
    PREFIX,
    checked_form,
    new_session,
    set_session_cookies,
)
from app.kernel.auth import KeyStore

__all__ = ["access_handlers"]

_REASONS = {"expired": "That key is no longer valid: log in again."}


def _safe_next(value: str | None) -> str:
    """Only a console path: never another site (``//host``) after logging in."""
    if value and value.startswith(PREFIX) and not value.startswith("//") and "\\" not in value:
        return value
    return PREFIX


def access_handlers(keys: KeyStore, *, required: bool) -> list[Any]:
    """``GET|POST /ui/login`` and ``POST /ui/logout``."""

    @get("/login", opt={"scope": None}, sync_to_thread=False)
    def login_form(
        request: Request[Any, Any, Any], next: FromQuery[str | None] = None
    ) -> Response[str]:
        reason = request.query_params.get("reason")
        return page(
            request,
            "login.html",
            title="Log in",
            next=_safe_next(next),
            required=required,
            message=_REASONS.get(reason or ""),
        )

    @post("/login", opt={"scope": None})
    async def login(request: Request[Any, Any, Any]) -> Response[Any]:
        form = await checked_form(request)
        key = form.get("key", "").strip()
        target = _safe_next(form.get("next"))
        if not key or keys.verify(key) is None:
            return page(
                request,
                "login.html",
                status=401,
                title="Log in",
                next=target,
                required=required,
                message="That key is not valid or has been revoked.",
            )
        new_session(request)  # a fresh CSRF token for the new session
        response: Response[Any] = Redirect(target, status_code=303)
        set_session_cookies(request, response, key=key)
        return response

    @post("/logout", opt={"scope": None})
    async def logout(request: Request[Any, Any, Any]) -> Response[Any]:
        await checked_form(request)
        response: Response[Any] = Redirect(f"{PREFIX}/login", status_code=303)
        response.delete_cookie(KEY_COOKIE, path=PREFIX)
        response.delete_cookie(CSRF_COOKIE, path=PREFIX)
        return response

    return [login_form, login, logout]
