"""The contract checker, schema compatibility and the shared value types."""

from __future__ import annotations

import copy
import importlib
import json
from collections.abc import AsyncIterator
from typing import Any, Protocol

import msgspec
import numpy as np
import pytest

from app.kernel.protocols import ContractError, describe
from contracts import _schema
from contracts.common import (
    InvalidInput,
    ModelRef,
    NotFound,
    QuarryError,
    Scope,
    Tensor,
    error_class,
    method,
    validate_name,
)


def _services() -> list[type]:
    services = []
    for name in _schema.CONTRACT_MODULES:
        module = importlib.import_module(f"contracts.{name}")
        services.append(getattr(module, f"{name.capitalize()}Service"))  # DESIGN.md's naming
    return services


def _uses_any(info: msgspec.inspect.Type, seen: set[type]) -> bool:
    if isinstance(info, msgspec.inspect.AnyType):
        return True
    if isinstance(info, msgspec.inspect.StructType):
        if info.cls in seen:
            return False
        seen.add(info.cls)
        return any(_uses_any(f.type, seen) for f in info.fields)
    children = [
        getattr(info, a) for a in ("item_type", "key_type", "value_type") if hasattr(info, a)
    ]
    children += list(getattr(info, "types", ()) or ())
    if isinstance(info, msgspec.inspect.TupleType):
        children += list(info.item_types)
    return any(_uses_any(c, seen) for c in children)


@pytest.mark.parametrize("service", _services(), ids=lambda s: s.__name__)
def test_every_contract_method_is_async_typed_and_encodable(service: type) -> None:
    for m in describe(service):
        for tp in filter(None, (m.request, m.answer)):
            assert not _uses_any(msgspec.inspect.type_info(tp), set()), f"{m.name} uses Any"
            msgspec.json.schema(tp)  # raises for anything msgspec cannot encode


class _Req(msgspec.Struct, frozen=True):
    value: int


def test_checker_rejects_a_sync_method() -> None:
    class Bad(Protocol):
        @method(scope=Scope.READ)
        def get(self, request: _Req) -> _Req: ...

    with pytest.raises(ContractError, match="must be async"):
        describe(Bad)


def test_checker_rejects_a_non_struct_request_and_a_missing_marker() -> None:
    class Loose(Protocol):
        @method(scope=Scope.READ)
        async def get(self, request: dict[str, Any]) -> _Req: ...

    class Unmarked(Protocol):
        async def get(self, request: _Req) -> _Req: ...

    with pytest.raises(ContractError, match="msgspec Structs"):
        describe(Loose)
    with pytest.raises(ContractError, match="@method"):
        describe(Unmarked)


def test_checker_requires_streaming_methods_to_return_async_iterators() -> None:
    class Stream(Protocol):
        @method(scope=Scope.READ, streaming=True)
        async def items(self, request: _Req) -> _Req: ...

    class Good(Protocol):
        @method(scope=Scope.READ, streaming=True)
        def items(self, request: _Req) -> AsyncIterator[_Req]: ...

    with pytest.raises(ContractError, match="streaming"):
        describe(Stream)
    assert describe(Good)[0].answer is _Req


@pytest.mark.parametrize("name", _schema.CONTRACT_MODULES)
def test_contracts_match_their_schema_snapshot(name: str) -> None:
    saved = json.loads((_schema.SCHEMA_DIR / f"{name}.json").read_text())
    live = _schema.snapshot(name)

    assert _schema.problems(saved, live) == []
    assert live == saved, "compatible change: run `python -m contracts._schema` to snapshot it"


def test_compatibility_rules_catch_breaking_changes() -> None:
    old = _schema.snapshot("registry")
    removed = copy.deepcopy(old)
    del removed["components"]["VersionInfo"]["properties"]["sha256"]
    required = copy.deepcopy(old)
    required["components"]["GetModel"]["required"].append("owner")
    retyped = copy.deepcopy(old)
    retyped["components"]["SetAlias"]["properties"]["version"] = {"type": "string"}
    major = copy.deepcopy(removed)
    major["version"][0] += 1

    assert _schema.problems(old, removed) == ["VersionInfo.sha256 was removed"]
    assert _schema.problems(old, required) == [
        "GetModel.owner is new and required (give it a default)"
    ]
    assert _schema.problems(old, retyped) == ["SetAlias.version changed type"]
    assert _schema.problems(old, major) == []


def test_changed_bounds_need_the_minor_version_raised() -> None:
    old = _schema.snapshot("registry")
    loose = copy.deepcopy(old)
    del loose["components"]["SetAlias"]["properties"]["version"]["maximum"]
    bumped = copy.deepcopy(old)
    bumped["version"][1] += 1

    assert _schema.problems(loose, old) == [
        "SetAlias.version changed its bounds (raise the minor version)"
    ]
    assert _schema.problems(loose, bumped) == []


@pytest.mark.parametrize(
    ("struct", "body"),
    [
        ("contracts.training:Split", {"seed": -1}),
        ("contracts.training:Split", {"seed": 2**100}),
        ("contracts.training:TrainingJobSpec", {"time_limit_s": 1e308}),
        ("contracts.features:GetFeatureView", {"version": 2**31}),
        ("contracts.registry:ListModels", {"limit": 0}),
        ("contracts.features:Clip", {"min": float("inf")}),
        ("contracts.monitoring:GetSummary", {"window_s": float("nan")}),
    ],
)
def test_numeric_fields_refuse_values_outside_their_bounds(
    struct: str, body: dict[str, Any]
) -> None:
    module, _, name = struct.partition(":")
    cls = getattr(importlib.import_module(module), name)
    required = {
        "TrainingJobSpec": {"trainer": "mlp", "model": "m", "dataset": {"label": "y"}},
        "GetFeatureView": {"name": "v"},
        "Clip": {"input": "v:f"},
        "GetSummary": {"model": "m"},
    }.get(name, {})

    msgspec.convert({**required}, cls)  # the required fields alone are fine
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({**required, **body}, cls)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("fraud", ModelRef(name="fraud")),
        ("fraud:3", ModelRef(name="fraud", version=3)),
        ("fraud@champion", ModelRef(name="fraud", alias="champion")),
        ("my.model-v2_x", ModelRef(name="my.model-v2_x")),
    ],
)
def test_model_refs_parse_and_print_back(text: str, expected: ModelRef) -> None:
    assert ModelRef.parse(text) == expected
    assert str(ModelRef.parse(text)) == text


@pytest.mark.parametrize(
    "text",
    [
        *("", "../etc", "a/b", ".hidden", "m:0", "m:x", "m@", "@a", "m:-1", "x" * 129),
        *("m:\u00b2", "m:\u0663", "m:+1", "m: 1", "m:1_0", "m:" + "1" * 5000, f"m:{2**63}"),
    ],
)
def test_bad_model_refs_are_invalid_input(text: str) -> None:
    with pytest.raises(InvalidInput):
        ModelRef.parse(text)


def test_names_reject_path_tricks() -> None:
    assert validate_name("model-1.onnx_v2") == "model-1.onnx_v2"
    for bad in ("..", "a/../b", "a\\b", "-lead", "a b", "é"):
        with pytest.raises(InvalidInput):
            validate_name(bad)


@pytest.mark.parametrize(
    "dtype", ["float32", "float64", "int64", "int8", "uint8", "bool", "float16"]
)
def test_tensors_round_trip_numpy_through_msgpack(dtype: str) -> None:
    array = (np.arange(12).reshape(3, 4) % 2).astype(dtype)
    wire = msgspec.msgpack.encode(Tensor.from_numpy(array))

    back = msgspec.msgpack.decode(wire, type=Tensor).to_numpy()

    np.testing.assert_array_equal(back, array)
    assert back.dtype == array.dtype


def test_bytes_tensors_use_the_length_prefixed_layout() -> None:
    tensor = Tensor.from_numpy(np.array([b"ab", b"", b"xyz"], dtype=object))
    assert bytes(tensor.data) == b"\x02\x00\x00\x00ab\x00\x00\x00\x00\x03\x00\x00\x00xyz"
    assert list(tensor.to_numpy()) == [b"ab", b"", b"xyz"]


def test_tensor_data_that_does_not_fit_its_shape_is_invalid() -> None:
    tensor = Tensor(dtype="FP32", shape=(2, 2), data=memoryview(b"\x00" * 12))
    with pytest.raises(InvalidInput, match="needs 16"):
        tensor.to_numpy()


def test_errors_rebuild_as_the_same_class_from_their_code() -> None:
    error = NotFound("no model 'x'", details={"name": "x"})
    rebuilt = error_class(error.to_dict()["code"])(error.message, details=error.details)
    assert type(rebuilt) is NotFound
    assert rebuilt.to_dict() == {
        "error": "no model 'x'",
        "code": "not_found",
        "details": {"name": "x"},
    }
    assert error_class("something_new") is QuarryError
