"""Hostile and odd requests against the kernel's HTTP layer: every answer is in the error shape.

The app is :func:`app.kernel.http.app.create_http_app` with a few stand-in routes, so these tests
pin down the shared mechanics (request parsing, methods, the schema routes, headers) that every
module's routes get, whatever the module.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from litestar import Litestar, Request, get, post
from litestar.params import FromPath, JSONBody
from litestar.testing import TestClient

from app.kernel.http.app import ModuleStatus, create_http_app
from app.kernel.settings import Settings
from contracts.common import Conflict


class _Platform:
    def readiness(self) -> dict[str, bool]:
        return {"things": True}

    def module_statuses(self) -> list[ModuleStatus]:
        return []


class Thing(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: str
    extra: dict[str, Any] = {}


@get("/things/{name:str}", sync_to_thread=False)
def read_thing(name: FromPath[str]) -> dict[str, str]:
    return {"name": name}


@post("/things/{name:str}", sync_to_thread=False)
def write_thing(name: FromPath[str], data: JSONBody[Thing]) -> dict[str, str]:
    return {"name": name, "body": data.name}


@post("/raw")
async def raw(request: Request[Any, Any, Any]) -> dict[str, Any]:
    return {"json": await request.json()}


@post("/forms")
async def forms(request: Request[Any, Any, Any]) -> dict[str, int]:
    return {"fields": len(await request.form())}


@get("/conflict", sync_to_thread=False)
def conflict() -> None:
    raise Conflict("taken", details={"what": "it"})


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient[Litestar]]:
    app = create_http_app(
        settings=Settings(data_dir=tmp_path),
        platform=_Platform(),
        route_handlers=[read_thing, write_thing, raw, forms, conflict],
    )
    with TestClient(app) as test_client:
        yield test_client


def assert_error(answer: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("application/json")
    body = answer.json()
    assert set(body) == {"error", "code", "details"}
    assert (body["code"], isinstance(body["error"], str), isinstance(body["details"], dict)) == (
        code,
        True,
        True,
    )
    assert body["error"]
    return dict(body)


def test_deeply_nested_json_is_400_not_500(client: TestClient[Litestar]) -> None:
    nested = b"[" * 100_000 + b"]" * 100_000
    json = {"content-type": "application/json"}

    typed = client.post("/things/a", content=b'{"name": "x", "extra": {"a": ' + nested + b"}}")
    untyped = client.post("/raw", content=nested, headers=json)

    assert "nested" in assert_error(typed, 400, "invalid_input")["error"]
    assert "nested" in assert_error(untyped, 400, "invalid_input")["error"]
    assert client.post("/raw", content=b"[[1]]", headers=json).json() == {"json": [[1]]}


def test_an_empty_json_body_says_that_a_body_is_needed(client: TestClient[Litestar]) -> None:
    answer = client.post("/things/a", content=b"", headers={"content-type": "application/json"})

    assert "body" in assert_error(answer, 400, "invalid_input")["error"]


def test_multipart_without_a_boundary_has_object_details(client: TestClient[Litestar]) -> None:
    answer = client.post("/forms", content=b"x", headers={"content-type": "multipart/form-data"})

    body = assert_error(answer, 400, "invalid_input")
    assert None not in body["details"].values()


def test_unknown_schema_paths_are_json_404s(client: TestClient[Litestar]) -> None:
    for path in ("/schema/nope", "/schema/%ff", "/schema/openapi.yaml", "/schema/a/b"):
        assert_error(client.get(path), 404, "not_found")
    assert client.get("/schema/openapi.json").status_code == 200


def test_head_is_get_without_the_body(client: TestClient[Litestar]) -> None:
    for path in ("/things/a", "/healthz", "/schema/openapi.json", "/v1/modules"):
        got, head = client.get(path), client.head(path)
        assert (head.status_code, head.content) == (200, b""), path
        assert head.headers["content-type"] == got.headers["content-type"], path
        assert head.headers.get("content-length") == got.headers.get("content-length"), path
    refused = client.head("/raw")
    assert (refused.status_code, refused.content) == (405, b"")
    conflicted = client.head("/conflict")
    assert (conflicted.status_code, conflicted.content) == (409, b"")


def test_options_and_405_list_every_method_of_the_path(client: TestClient[Litestar]) -> None:
    options = client.options("/things/a")
    refused = client.delete("/things/a")

    assert options.status_code == 204
    assert {m.strip() for m in options.headers["allow"].split(",")} == {
        "GET",
        "HEAD",
        "POST",
        "OPTIONS",
    }
    assert_error(refused, 405, "method_not_allowed")
    assert {m.strip() for m in refused.headers["allow"].split(",")} == {
        "GET",
        "HEAD",
        "POST",
        "OPTIONS",
    }
    post_only = client.options("/raw")
    assert {m.strip() for m in post_only.headers["allow"].split(",")} == {"POST", "OPTIONS"}


@pytest.mark.parametrize("value", ["+5000", "1_000", "5000 ms", "0x10", "\xb2", "1" * 5000, ""])
def test_only_plain_digits_are_a_deadline(client: TestClient[Litestar], value: str) -> None:
    answer = client.get("/things/a", headers=[(b"quarry-deadline-ms", value.encode("latin-1"))])

    body = assert_error(answer, 400, "invalid_input")
    assert body["details"]["header"] == "quarry-deadline-ms"


def test_a_plain_deadline_is_accepted(client: TestClient[Litestar]) -> None:
    assert client.get("/things/a", headers={"quarry-deadline-ms": "5000"}).status_code == 200


def test_the_openapi_schema_documents_the_error_shape(client: TestClient[Litestar]) -> None:
    schema = client.get("/schema/openapi.json").json()

    error = schema["components"]["schemas"]["Error"]
    assert set(error["required"]) == {"error", "code", "details"}
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            responses = operation["responses"]
            for status in ("400", "401", "403", "429", "500", "503", "504"):
                content = responses[status]["content"]["application/json"]
                assert content["schema"] == {"$ref": "#/components/schemas/Error"}, (
                    path,
                    method,
                    status,
                )
    thing = schema["components"]["schemas"]["Thing"]
    assert thing["additionalProperties"] is False


def test_multipart_over_the_parser_limits_is_413(client: TestClient[Litestar]) -> None:
    many = [(f"f{i}", (None, b"x")) for i in range(1_500)]
    big_header = (
        b'--xx\r\nContent-Disposition: form-data; name="a"; filename="'
        + b"a" * 200_000
        + b'"\r\n\r\nx\r\n--xx--\r\n'
    )

    too_many = client.post("/forms", files=many)
    too_long = client.post(
        "/forms", content=big_header, headers={"content-type": "multipart/form-data; boundary=xx"}
    )

    for answer in (too_many, too_long):
        assert "multipart" in assert_error(answer, 413, "payload_too_large")["error"]
    assert client.post("/forms", files=many[:10]).json() == {"fields": 10}
