"""The registry's HTTP routes over a local service, through litestar's test client.

Errors are mapped the way the kernel maps them (``app.kernel.errors.status_for``) so the answers
match what the served app gives.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from litestar import Litestar
from litestar.testing import TestClient

from app.bootstrap import Platform, create_app
from app.kernel.http.openapi import StructDefaultsSchemaPlugin
from app.kernel.settings import Settings
from app.modules.registry import module
from app.modules.registry.settings import RegistrySettings
from contracts.common import method_info
from contracts.registry import RegisterVersion, RegistryService
from tests.contract.registry_behaviour import reference_profile
from tests.fakes.models import linear_onnx, torch_mlp_bytes

MAX_UPLOAD = 64 * 1024


@pytest.fixture
def client(tmp_path: Path, database_url: str) -> Iterator[TestClient[Litestar]]:
    """The real app (kernel middleware, error handlers, auth off on loopback) on each database."""
    settings = Settings(data_dir=tmp_path, database_urls={"registry": database_url}).with_module(
        RegistrySettings(max_upload_bytes=MAX_UPLOAD)
    )
    with TestClient(create_app(Platform(settings), host="127.0.0.1")) as test_client:
        yield test_client


@pytest.fixture
def served(
    tmp_path: Path, database_url: str
) -> Iterator[tuple[TestClient[Litestar], RegistryService]]:
    """The app's client and, for what HTTP cannot send, the registry it serves (in its loop)."""
    settings = Settings(data_dir=tmp_path, database_urls={"registry": database_url})
    platform = Platform(settings)
    with TestClient(create_app(platform, host="127.0.0.1")) as test_client:
        yield test_client, platform.client("registry", caller="tests")


def upload(
    client: TestClient[Litestar],
    name: str = "iris",
    data: bytes | None = None,
    *,
    seed: int = 0,
    metadata: Any = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    form = {} if metadata is None else {"metadata": metadata}
    content = linear_onnx(seed=seed) if data is None else data
    return client.post(
        f"/v1/registry/models/{name}/versions",
        files={"file": ("model.onnx", content, "application/octet-stream")},
        data=form,
        headers=headers or {},
    )


def test_upload_answers_201_with_the_version(client: TestClient[Litestar]) -> None:
    data = linear_onnx(seed=1)
    meta = {"description": "first", "tags": {"team": "ml"}, "metrics": {"acc": 0.9}}

    answer = upload(client, data=data, metadata=json.dumps(meta))

    assert answer.status_code == 201
    body = answer.json()
    assert (body["name"], body["version"], body["size"]) == ("iris", 1, len(data))
    assert body["sha256"] == hashlib.sha256(data).hexdigest()
    assert body["signature"]["inputs"] == [{"name": "x", "dtype": "FP32", "shape": [-1, 3]}]
    assert (body["description"], body["tags"], body["metrics"]) == (
        "first",
        {"team": "ml"},
        {"acc": 0.9},
    )
    assert client.get("/v1/registry/models/iris/versions/1").json() == body


@pytest.mark.parametrize(
    ("metadata", "needle"),
    [
        ("{not json", "metadata"),
        ('{"colour": "red"}', "colour"),
        ('{"tags": {"a": 1}}', "metadata"),
    ],
)
def test_bad_metadata_is_400(client: TestClient[Litestar], metadata: str, needle: str) -> None:
    answer = upload(client, metadata=metadata)

    assert answer.status_code == 400
    assert answer.json()["code"] == "invalid_input"
    assert needle in answer.json()["error"]
    assert client.get("/v1/registry/models/iris").status_code == 404


def test_an_upload_without_a_file_is_400(client: TestClient[Litestar]) -> None:
    as_field = client.post("/v1/registry/models/iris/versions", data={"metadata": "{}"})
    as_json = client.post("/v1/registry/models/iris/versions", json={"file": "abc"})

    for answer in (as_field, as_json):
        assert answer.status_code == 400
        assert answer.json()["code"] == "invalid_input"


def test_malformed_uploads_are_400(client: TestClient[Litestar]) -> None:
    boundary = "xyz"
    binary_field = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"\r\n\r\n'.encode()
        + linear_onnx()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    multipart = {"content-type": f"multipart/form-data; boundary={boundary}"}
    two_files = [("file", ("a.onnx", linear_onnx(), "x")), ("file", ("b.onnx", linear_onnx(), "x"))]
    url = "/v1/registry/models/iris/versions"

    answers = [
        client.post(url, content=binary_field, headers=multipart),  # a file part without filename
        client.post(url, content=b"not multipart at all", headers=multipart),
        client.post(url, files=two_files),
    ]

    assert [a.status_code for a in answers] == [400, 400, 400]
    assert all(a.json()["code"] == "invalid_input" for a in answers)
    assert client.get("/v1/registry/models").json()["items"] == []


def test_metadata_may_come_as_a_file_part(client: TestClient[Litestar]) -> None:
    meta = ("meta.json", b'{"description": "from a file"}', "application/json")

    answer = client.post(
        "/v1/registry/models/iris/versions",
        files={"file": ("m.onnx", linear_onnx(), "application/octet-stream"), "metadata": meta},
    )

    assert answer.status_code == 201
    assert answer.json()["description"] == "from a file"


def test_garbage_bytes_are_400_and_register_nothing(client: TestClient[Litestar]) -> None:
    answer = upload(client, data=b"definitely not onnx")

    assert answer.status_code == 400
    assert "ONNX" in answer.json()["error"]
    assert client.get("/v1/registry/models").json() == {"items": [], "next_cursor": None}


def test_uploads_over_the_limit_are_413(client: TestClient[Litestar]) -> None:
    answer = upload(client, data=b"\x00" * (MAX_UPLOAD + 1))

    assert answer.status_code == 413
    assert answer.json()["code"] == "payload_too_large"


def test_path_tricks_in_names_are_refused(client: TestClient[Litestar]) -> None:
    for name in (".hidden", "a%2Fb", "..%2Fx"):
        answer = upload(client, name)
        assert answer.status_code in (400, 404), name
        assert answer.json()["code"] in ("invalid_input", "not_found")
    assert client.get("/v1/registry/models").json()["items"] == []


def test_the_idempotency_key_header_registers_once(client: TestClient[Litestar]) -> None:
    headers = {"Idempotency-Key": "abc-123"}

    first = upload(client, headers=headers)
    second = upload(client, headers=headers)

    assert (first.status_code, second.status_code) == (201, 201)
    assert first.json() == second.json()
    assert client.get("/v1/registry/models/iris").json()["version_count"] == 1


def test_models_list_in_pages(client: TestClient[Litestar]) -> None:
    for seed, name in enumerate(["c", "a", "b"]):
        assert upload(client, name, seed=seed).status_code == 201
    client.patch("/v1/registry/models/b", json={"tags": {"team": "ml"}})

    first = client.get("/v1/registry/models", params={"limit": 2}).json()
    rest = client.get("/v1/registry/models", params={"cursor": first["next_cursor"]}).json()
    tagged = client.get("/v1/registry/models", params={"tag": "team=ml"}).json()

    assert [m["name"] for m in first["items"]] == ["a", "b"]
    assert [m["name"] for m in rest["items"]] == ["c"]
    assert rest["next_cursor"] is None
    assert [m["name"] for m in tagged["items"]] == ["b"]
    assert client.get("/v1/registry/models", params={"limit": 0}).status_code == 400
    assert client.get("/v1/registry/models", params={"tag": "novalue"}).status_code == 400


def test_patch_changes_description_and_tags(client: TestClient[Litestar]) -> None:
    upload(client)

    changed = client.patch("/v1/registry/models/iris", json={"description": "flowers"})
    unknown = client.patch("/v1/registry/models/iris", json={"colour": "red"})
    missing = client.patch("/v1/registry/models/nope", json={"description": "x"})

    assert changed.status_code == 200
    assert changed.json()["description"] == "flowers"
    assert unknown.status_code == 400
    assert missing.status_code == 404
    assert missing.json()["code"] == "not_found"


def test_versions_archive_restore_and_delete(client: TestClient[Litestar]) -> None:
    for seed in range(3):
        upload(client, seed=seed)
    base = "/v1/registry/models/iris"

    archived = client.post(f"{base}/versions/3/archive")
    live = client.get(f"{base}/versions", params={"include_archived": "false"}).json()
    restored = client.post(f"{base}/versions/3/restore")
    client.put(f"{base}/aliases/prod", json={"version": 2})
    refused = client.delete(f"{base}/versions/2")
    deleted = client.delete(f"{base}/versions/1")

    assert archived.json()["status"] == "archived"
    assert [v["version"] for v in live["items"]] == [2, 1]
    assert restored.json()["status"] == "ready"
    assert refused.status_code == 409
    assert refused.json()["details"]["aliases"] == ["prod"]
    assert deleted.status_code == 200
    assert deleted.json() == {"name": "iris", "version": 1, "artifact_deleted": True}
    assert client.get(f"{base}/versions/1").status_code == 404


def test_aliases_put_get_delete(client: TestClient[Litestar]) -> None:
    upload(client)
    url = "/v1/registry/models/iris/aliases/champion"

    put = client.put(url, json={"version": 1})
    got = client.get(url)
    removed = client.delete(url)
    gone = client.get(url)

    assert put.status_code == 200
    assert put.json() == {"name": "iris", "alias": "champion", "version": 1}
    assert got.json() == put.json()
    assert removed.json() == put.json()
    assert gone.status_code == 404
    reserved = client.put("/v1/registry/models/iris/aliases/latest", json={"version": 1})
    assert reserved.status_code == 400
    assert client.put(url, json={"version": "one"}).status_code == 400


def test_the_artifact_streams_with_its_checksum(client: TestClient[Litestar]) -> None:
    data = linear_onnx(32, 16, seed=4)
    digest = hashlib.sha256(data).hexdigest()
    upload(client, data=data)
    url = "/v1/registry/models/iris/versions/1/artifact"

    answer = client.get(url)
    cached = client.get(url, headers={"If-None-Match": f'"{digest}"'})

    assert answer.status_code == 200
    assert answer.content == data
    assert answer.headers["content-type"] == "application/octet-stream"
    assert answer.headers["etag"] == f'"{digest}"'
    assert answer.headers["x-checksum-sha256"] == digest
    assert answer.headers["content-length"] == str(len(data))
    assert cached.status_code == 304
    assert client.get("/v1/registry/models/iris/versions/2/artifact").status_code == 404


def test_the_reference_profile_answers_as_json_rows(
    served: tuple[TestClient[Litestar], RegistryService],
) -> None:
    client, registry = served
    profile = reference_profile(rows=5)
    request = RegisterVersion(name="iris", artifact=linear_onnx(), reference_profile=profile)
    client.blocking_portal.call(registry.register_version, request)
    upload(client, seed=1)
    url = "/v1/registry/models/iris/versions/{}/reference-profile"

    answer = client.get(url.format(1))
    without = client.get(url.format(2))

    assert answer.status_code == 200
    body = answer.json()
    assert (body["name"], body["version"], body["columns"]) == ("iris", 1, profile.columns)
    assert (body["rows"], body["task"]) == (1_000, "regression")
    expected = profile.sample.to_numpy()
    assert len(body["sample"]) == 5
    assert all(len(row) == 3 for row in body["sample"])
    assert body["sample"][0][1] is None  # NaN
    got = np.array(body["sample"], dtype=np.float64).astype(np.float32)
    np.testing.assert_array_equal(got, expected)
    y = body["predictions"]["y"]
    assert (y["dtype"], y["shape"]) == ("FP32", [5, 2])
    np.testing.assert_array_equal(
        np.array(y["values"], dtype=np.float32), profile.predictions["y"].to_numpy()
    )
    assert body["predictions"]["label"]["values"] == (
        profile.predictions["label"].to_numpy().tolist()
    )
    assert body["profiles"][0]["histogram"] == {"edges": [0.0, 0.5, 1.0], "counts": [3, 4]}
    assert client.get("/v1/registry/models/iris/versions/1").json()["has_reference_profile"]
    assert without.status_code == 404
    assert without.json()["code"] == "not_found"
    assert client.get(url.format(3)).status_code == 404


def test_every_route_carries_its_contract_scope(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path).with_module(
        RegistrySettings(max_upload_bytes=MAX_UPLOAD)
    )
    app = Litestar(route_handlers=module.routes(object(), settings))  # type: ignore[arg-type]
    scopes = {m.scope.value for m in map(method_info, vars(RegistryService).values()) if m}

    seen = 0
    for route in app.routes:
        if not route.path.startswith("/v1/registry"):
            continue
        for handler in route.route_handlers:  # type: ignore[attr-defined]
            if handler.http_methods == {"OPTIONS"}:  # litestar's automatic CORS answers
                continue
            seen += 1
            assert handler.opt["scope"] in scopes, route.path
            if route.path.endswith("/versions") and "POST" in handler.http_methods:
                assert handler.opt["scope"] == "train"
                assert handler.resolve_request_max_body_size() == MAX_UPLOAD
            if route.path.endswith("/reference"):
                assert handler.opt["scope"] == "train"
    assert seen == 17  # with the alias history, the rollback and the reference upload


def test_the_openapi_schema_builds(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path).with_module(
        RegistrySettings(max_upload_bytes=MAX_UPLOAD)
    )
    app = Litestar(
        route_handlers=module.routes(object(), settings),  # type: ignore[arg-type]
        plugins=[StructDefaultsSchemaPlugin()],
    )

    schema = app.openapi_schema.to_schema()

    paths = schema["paths"]
    assert "/v1/registry/models/{name}/versions/{version}/artifact" in paths
    upload_body = paths["/v1/registry/models/{name}/versions"]["post"]["requestBody"]
    form = upload_body["content"]["multipart/form-data"]["schema"]
    assert form["required"] == ["file"]
    assert form["properties"]["file"]["format"] == "binary"
    listed = paths["/v1/registry/models"]["get"]["responses"]["200"]["content"]
    assert listed["application/json"]["schema"]["$ref"].startswith("#/components/schemas/Page")


def test_a_torch_export_registers_aliases_and_downloads(client: TestClient[Litestar]) -> None:
    data = torch_mlp_bytes()

    created = upload(client, name="mlp", data=data)
    aliased = client.put("/v1/registry/models/mlp/aliases/champion", json={"version": 1})
    by_alias = client.get("/v1/registry/models/mlp")
    downloaded = client.get("/v1/registry/models/mlp/versions/1/artifact")

    assert created.status_code == 201, created.text
    assert created.json()["signature"]["inputs"] == [
        {"name": "features", "dtype": "FP32", "shape": [-1, 8]}
    ]
    assert aliased.status_code == 200
    assert by_alias.json()["aliases"] == {"champion": 1}
    assert downloaded.content == data
    assert downloaded.headers["x-checksum-sha256"] == hashlib.sha256(data).hexdigest()
    malformed = client.put(
        "/v1/registry/models/mlp/aliases/champion",
        content=b"{not json",
        headers={"content-type": "application/json"},
    )
    assert malformed.status_code == 400
    assert set(malformed.json()) == {"error", "code", "details"}
    not_allowed = client.delete("/v1/registry/models/mlp/versions/1/artifact")
    assert not_allowed.status_code == 405
    assert not_allowed.json()["code"] == "method_not_allowed"
    assert "GET" in not_allowed.headers["allow"]


# --- hostile input: every answer is a 4xx in the error shape, on both databases --------------

HUGE = "99999999999999999999"  # past SQLite's 64-bit integers
PAST_INT4 = str(2**31)  # past PostgreSQL's INTEGER columns


def _is_error(answer: httpx.Response, status: int, code: str = "invalid_input") -> bool:
    body = answer.json()
    return (answer.status_code, body["code"]) == (status, code) and set(body) == {
        "error",
        "code",
        "details",
    }


@pytest.mark.parametrize("number", [HUGE, PAST_INT4])
def test_version_numbers_past_the_database_range_are_400(
    client: TestClient[Litestar], number: str
) -> None:
    upload(client)
    base = "/v1/registry/models/iris"
    cursor = base64.urlsafe_b64encode(f'["v","iris",{number}]'.encode()).decode().rstrip("=")

    answers = [
        client.get(f"{base}/versions/{number}"),
        client.get(f"{base}/versions/{number}/artifact"),
        client.post(f"{base}/versions/{number}/archive"),
        client.post(f"{base}/versions/{number}/restore"),
        client.delete(f"{base}/versions/{number}"),
        client.put(f"{base}/aliases/prod", json={"version": int(number)}),
        client.get(f"{base}/versions", params={"cursor": cursor}),
    ]

    assert [a.status_code for a in answers] == [400] * len(answers), [a.text for a in answers]
    assert all(_is_error(a, 400) for a in answers)
    assert "version" in answers[0].json()["error"]
    assert client.get(f"{base}/versions/1").status_code == 200


def test_nul_characters_in_text_are_400_not_a_database_error(
    client: TestClient[Litestar],
) -> None:
    upload(client)
    nul_cursor = base64.urlsafe_b64encode(b'["m","a\\u0000"]').decode().rstrip("=")

    answers = [
        client.patch("/v1/registry/models/iris", json={"description": "a\x00b"}),
        client.patch("/v1/registry/models/iris", json={"tags": {"team": "a\x00"}}),
        upload(client, metadata=json.dumps({"description": "\x00"})),
        upload(client, metadata=json.dumps({"params": {"\x00": "x"}})),
        client.get("/v1/registry/models", params={"cursor": nul_cursor}),
    ]

    assert [a.status_code for a in answers] == [400] * len(answers), [a.text for a in answers]
    assert all(_is_error(a, 400) for a in answers)
    assert client.get("/v1/registry/models/iris").json()["version_count"] == 1


def test_a_prefix_no_model_name_can_start_with_matches_nothing(
    client: TestClient[Litestar],
) -> None:
    upload(client)

    for prefix in ("\x00", "ir\x00", "é", "a/b", "x" * 200):
        answer = client.get("/v1/registry/models", params={"prefix": prefix})
        assert answer.status_code == 200, (prefix, answer.text)
        assert answer.json() == {"items": [], "next_cursor": None}
    assert [m["name"] for m in client.get("/v1/registry/models?prefix=ir").json()["items"]] == [
        "iris"
    ]


def test_head_answers_like_get_without_a_body(client: TestClient[Litestar]) -> None:
    data = linear_onnx(seed=5)
    upload(client, data=data)
    url = "/v1/registry/models/iris/versions/1/artifact"

    head = client.head(url)
    missing = client.head("/v1/registry/models/nope")

    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == str(len(data))
    assert head.headers["x-checksum-sha256"] == hashlib.sha256(data).hexdigest()
    assert missing.status_code == 404
    assert missing.content == b""
    assert client.head("/v1/registry/models/iris").status_code == 200


def test_options_lists_every_method_of_the_path(client: TestClient[Litestar]) -> None:
    expected = {
        "/v1/registry/models/iris": {"GET", "HEAD", "PATCH", "OPTIONS"},
        "/v1/registry/models/iris/versions": {"GET", "HEAD", "POST", "OPTIONS"},
        "/v1/registry/models/iris/versions/1": {"GET", "HEAD", "DELETE", "OPTIONS"},
        "/v1/registry/models/iris/aliases/a": {"GET", "HEAD", "PUT", "DELETE", "OPTIONS"},
        "/v1/registry/models": {"GET", "HEAD", "OPTIONS"},
    }

    for path, methods in expected.items():
        answer = client.options(path)
        assert answer.status_code == 204, path
        assert {m.strip() for m in answer.headers["allow"].split(",")} == methods, path
        refused = client.request("TRACE", path)
        assert refused.status_code == 405
        assert {m.strip() for m in refused.headers["allow"].split(",")} == methods, path


def test_the_schema_documents_the_rules_and_errors(client: TestClient[Litestar]) -> None:
    paths = client.get("/schema/openapi.json").json()["paths"]

    version = paths["/v1/registry/models/{name}/versions/{version}"]
    params = {p["name"]: p["schema"] for p in version["delete"]["parameters"]}
    alias = paths["/v1/registry/models/{name}/aliases/{alias}"]["put"]
    alias_param = next(p["schema"] for p in alias["parameters"] if p["name"] == "alias")
    listed = paths["/v1/registry/models"]["get"]

    assert params["name"]["pattern"] == "^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
    assert (params["version"]["minimum"], params["version"]["maximum"]) == (1, 2**31 - 1)
    assert "409" in version["delete"]["responses"]
    assert "409" in alias["responses"]
    assert alias_param["pattern"].startswith("^(?![Ll][Aa][Tt][Ee][Ss][Tt]$)")
    limit = next(p["schema"] for p in listed["parameters"] if p["name"] == "limit")
    assert (limit["minimum"], limit["maximum"]) == (1, 500)
    error = {"$ref": "#/components/schemas/Error"}
    assert listed["responses"]["400"]["content"]["application/json"]["schema"] == error
