"""``/schema/openapi.json`` of the whole platform: complete, typed, tagged, and unchanged unless
on purpose.

The snapshot beside this file is the schema as shipped; a change to the public API shows up as a
diff there. After an intended change, regenerate it with::

    QUARRY_UPDATE_OPENAPI=1 .venv/bin/pytest tests/integration/test_openapi.py
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar.serialization import encode_json

from app.bootstrap import Platform, create_app
from app.kernel.settings import Settings

SNAPSHOT = Path(__file__).parent / "snapshots" / "openapi.json"
WRITES = ("post", "put", "patch")
RAW_ANSWERS = {"text/html", "application/octet-stream", "application/x-ndjson"}
"""Media types whose 2xx answers are strings indeed: a page, bytes, lines of JSON."""


@pytest.fixture(scope="module")
def schema(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    platform = Platform(Settings(data_dir=tmp_path_factory.mktemp("openapi")))
    app = create_app(platform, host="127.0.0.1")
    built: dict[str, Any] = json.loads(encode_json(app.openapi_schema.to_schema()))
    return built


def _operations(schema: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in sorted(schema["paths"].items()):
        for method, operation in item.items():
            if method in ("get", "post", "put", "patch", "delete"):
                yield path, method, operation


def test_the_schema_matches_the_snapshot(schema: dict[str, Any]) -> None:
    text = json.dumps(schema, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
    if os.environ.get("QUARRY_UPDATE_OPENAPI"):
        SNAPSHOT.parent.mkdir(exist_ok=True)
        SNAPSHOT.write_text(text, encoding="utf-8")
    assert text == SNAPSHOT.read_text(encoding="utf-8"), (
        "the public API changed; if on purpose, regenerate the snapshot with"
        " QUARRY_UPDATE_OPENAPI=1 .venv/bin/pytest tests/integration/test_openapi.py"
    )


def test_every_write_declares_its_body_with_a_schema(schema: dict[str, Any]) -> None:
    missing = []
    for path, method, operation in _operations(schema):
        if method not in WRITES:
            continue
        content = operation.get("requestBody", {}).get("content", {})
        if not content or not all("schema" in media for media in content.values()):
            missing.append(f"{method.upper()} {path}")
    assert not missing


def test_no_success_answer_is_a_bare_string_unless_it_is_one(schema: dict[str, Any]) -> None:
    bare = []
    for path, method, operation in _operations(schema):
        for status, answer in operation["responses"].items():
            if not status.startswith("2"):
                continue
            for media_type, media in (answer.get("content") or {}).items():
                if media.get("schema", {}).get("type") == "string" and (
                    media_type not in RAW_ANSWERS
                ):
                    bare.append(f"{method.upper()} {path} {status} {media_type}")
    assert not bare


def test_every_operation_has_a_tag_a_summary_and_a_description(schema: dict[str, Any]) -> None:
    tags = set()
    for path, method, operation in _operations(schema):
        assert operation.get("tags"), f"{method.upper()} {path}"
        assert operation.get("summary"), f"{method.upper()} {path}"
        assert operation.get("description"), f"{method.upper()} {path}"
        tags.update(operation["tags"])
    assert tags >= {
        "registry",
        "features",
        "inference",
        "Open Inference Protocol",
        "training",
        "monitoring",
        "platform",
    }


@pytest.mark.parametrize(
    ("path", "method"),
    [
        ("/v1/predict/{model_ref}", "post"),
        ("/v2/models/{m}/infer", "post"),
        ("/v1/features/online", "post"),
        ("/v1/training/jobs", "post"),
    ],
)
def test_the_main_routes_show_examples(schema: dict[str, Any], path: str, method: str) -> None:
    operation = schema["paths"][path][method]
    body = operation["requestBody"]
    assert body["required"] is True
    assert body["content"]["application/json"]["examples"]
    if path != "/v1/training/jobs":
        assert operation["responses"]["200"]["content"]["application/json"]["examples"]


def test_predict_declares_its_body_and_answer_in_json_and_msgpack(schema: dict[str, Any]) -> None:
    operation = schema["paths"]["/v1/predict/{model_ref}"]["post"]
    for content in (operation["requestBody"]["content"], operation["responses"]["200"]["content"]):
        assert set(content) == {"application/json", "application/x-msgpack"}
    body = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    answer = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    assert body.endswith("/PredictBody")
    assert answer.endswith("/PredictAnswer")
    predict_answer = schema["components"]["schemas"]["PredictAnswer"]
    assert {"outputs", "model", "version", "prediction_id"} <= set(predict_answer["required"])
    assert "422" in operation["responses"]


def test_path_parameters_carry_their_patterns(schema: dict[str, Any]) -> None:
    unchecked = []
    for path, method, operation in _operations(schema):
        for parameter in operation.get("parameters", []):
            if parameter["in"] != "path" or parameter["name"].endswith("id"):
                continue
            if "pattern" not in parameter["schema"] and parameter["schema"]["type"] == "string":
                unchecked.append(f"{method.upper()} {path} {parameter['name']}")
    assert not unchecked


def test_bodyless_actions_take_an_optional_empty_object(schema: dict[str, Any]) -> None:
    operation = schema["paths"]["/v1/training/jobs/{job_id}/cancel"]["post"]
    assert operation["requestBody"]["required"] is False
    ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert schema["components"]["schemas"][ref.rsplit("/", 1)[1]]["additionalProperties"] is False
