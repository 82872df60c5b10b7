"""The Open Inference Protocol (KServe v2) wire format: request bodies in, answer bodies out.

An inference body is a JSON header, optionally followed by raw tensor bytes (the binary tensor
data extension): ``Inference-Header-Content-Length: N`` says the first ``N`` bytes are the JSON
and the rest is each binary input's bytes, concatenated in input order, each input's share given
by its ``parameters.binary_data_size``. Answers use the same layout when any output asks for
binary data.

Everything malformed is :class:`~contracts.common.InvalidInput` (HTTP 400) naming the input and
the problem. Whether the tensors fit the model is the inference service's call (422).
"""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt

from app.kernel.numbers import parse_int
from contracts.common import InvalidInput, PayloadTooLarge, Tensor
from contracts.inference import Prediction

__all__ = [
    "HEADER_LENGTH",
    "InferAnswer",
    "InferenceRequest",
    "ParsedRequest",
    "decode_content",
    "encode_prediction",
    "parse_infer_request",
]

HEADER_LENGTH = "Inference-Header-Content-Length"
"""The binary tensor data extension's header: how many leading body bytes are JSON."""

_NUMPY: dict[str, np.dtype[Any]] = {
    name: np.dtype(code)
    for name, code in {
        "BOOL": "?",
        "UINT8": "u1",
        "UINT16": "<u2",
        "UINT32": "<u4",
        "UINT64": "<u8",
        "INT8": "i1",
        "INT16": "<i2",
        "INT32": "<i4",
        "INT64": "<i8",
        "FP16": "<f2",
        "FP32": "<f4",
        "FP64": "<f8",
    }.items()
}
_DATATYPES = ", ".join([*_NUMPY, "BYTES"])
# The numpy kinds JSON values may decode to for each target kind (ints are fine for floats).
_JSON_KINDS = {"b": "b", "u": "iu", "i": "iu", "f": "iuf"}
_LENGTH = struct.Struct("<I")
_KIND_NAMES = {"b": "booleans", "u": "integers", "i": "integers", "f": "numbers"}


# --- the request header ---------------------------------------------------------------------


class InputParameters(msgspec.Struct, frozen=True, kw_only=True):
    """The input parameters this server reads (others are ignored)."""

    binary_data_size: int | None = None
    shared_memory_region: str | None = None


class RequestInput(msgspec.Struct, frozen=True, kw_only=True):
    """One input tensor: JSON ``data`` (flat or nested, row-major) or a binary data size."""

    name: str
    shape: list[int]
    datatype: str
    parameters: InputParameters = InputParameters()
    data: Any = None


class OutputParameters(msgspec.Struct, frozen=True, kw_only=True):
    """The output parameters this server reads (others are ignored)."""

    binary_data: bool | None = None
    classification: int = 0
    shared_memory_region: str | None = None


class RequestOutput(msgspec.Struct, frozen=True, kw_only=True):
    """One requested output and how it should come back."""

    name: str
    parameters: OutputParameters = OutputParameters()


class RequestParameters(msgspec.Struct, frozen=True, kw_only=True):
    """Request parameters this server reads (sequence, priority and timeout are ignored)."""

    binary_data_output: bool = False


class InferenceRequest(msgspec.Struct, frozen=True, kw_only=True):
    """The JSON header of ``POST /v2/models/{m}[/versions/{v}]/infer``."""

    inputs: list[RequestInput]
    id: str | None = None
    parameters: RequestParameters = RequestParameters()
    outputs: list[RequestOutput] = []


_REQUEST = msgspec.json.Decoder(InferenceRequest)


# --- the answer -----------------------------------------------------------------------------


class ResponseOutput(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One output tensor: JSON ``data`` (flat, row-major) or ``parameters.binary_data_size``."""

    name: str
    datatype: str
    shape: list[int]
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = None


class InferenceResponse(msgspec.Struct, frozen=True, kw_only=True):
    """The JSON (header) of an inference answer."""

    model_name: str
    model_version: str
    id: str
    parameters: dict[str, Any]
    outputs: list[ResponseOutput]


_ENCODER = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True)
class ParsedRequest:
    """An inference request as the service wants it, plus how the caller wants the answer."""

    id: str | None
    inputs: dict[str, Tensor]
    outputs: list[str]
    binary: dict[str, bool]
    """Per requested output: whether it comes back as binary data."""
    binary_default: bool
    """For outputs not requested by name: ``parameters.binary_data_output``."""


@dataclass(frozen=True, slots=True)
class InferAnswer:
    """An encoded answer: the body, and the JSON header's length when binary data follows."""

    body: bytes
    header_length: int | None


# --- decoding -------------------------------------------------------------------------------


def decode_content(body: bytes, encoding: str | None, limit: int) -> bytes:
    """Undo a ``Content-Encoding`` of ``gzip`` or ``deflate`` (tritonclient's request compression).

    The decompressed body may hold at most ``limit`` bytes (:class:`PayloadTooLarge` above it).
    """
    name = (encoding or "identity").strip().lower()
    if name == "identity":
        return body
    wbits = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}.get(name)
    if wbits is None:
        raise InvalidInput(
            f"unsupported Content-Encoding {encoding!r}: send gzip, deflate or identity",
            details={"content_encoding": encoding},
        )
    inflater = zlib.decompressobj(wbits)
    try:
        plain = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise InvalidInput(f"the request body is not valid {name} data: {exc}") from None
    if len(plain) > limit:
        raise PayloadTooLarge(
            f"the decompressed request body is larger than {limit} bytes", details={"limit": limit}
        )
    if not inflater.eof:
        raise InvalidInput(f"the {name} request body ends before its compressed stream does")
    return plain


def parse_infer_request(body: bytes, header_length: str | None) -> ParsedRequest:
    """Read an inference body (JSON, or JSON + binary tensor data) into tensors."""
    view = memoryview(body)
    split = _header_length(header_length, len(view))
    header = _decode_header(view[:split])
    binary = view[split:]
    offset = 0
    inputs: dict[str, Tensor] = {}
    for item in header.inputs:
        if item.name in inputs:
            raise _bad(item, "is given more than once")
        tensor, offset = _input_tensor(item, binary, offset)
        inputs[item.name] = tensor
    if offset != len(binary):
        raise InvalidInput(
            f"{len(binary) - offset} bytes of binary data follow the inputs' binary_data_size"
            f" total of {offset}",
            details={"binary_bytes": len(binary), "claimed": offset},
        )
    return ParsedRequest(
        id=header.id,
        inputs=inputs,
        outputs=_requested_outputs(header),
        binary=_binary_flags(header),
        binary_default=header.parameters.binary_data_output,
    )


def _header_length(value: str | None, body_size: int) -> int:
    if value is None:
        return body_size
    length = parse_int(value, what=HEADER_LENGTH, field="header")
    if length > body_size:
        raise InvalidInput(
            f"{HEADER_LENGTH} is {length} but the body holds only {body_size} bytes",
            details={"header": HEADER_LENGTH, "value": length, "body_bytes": body_size},
        )
    return length


def _decode_header(raw: memoryview) -> InferenceRequest:
    try:
        return _REQUEST.decode(raw)
    except msgspec.DecodeError as exc:
        raise InvalidInput(
            f"invalid inference request: {exc}",
            details={"expected": "a JSON object with 'inputs': [{name, shape, datatype, data}]"},
        ) from None


def _input_tensor(item: RequestInput, binary: memoryview, offset: int) -> tuple[Tensor, int]:
    if item.datatype != "BYTES" and item.datatype not in _NUMPY:
        raise _bad(item, f"has unknown datatype {item.datatype!r}; expected one of {_DATATYPES}")
    if any(dim < 0 for dim in item.shape):
        raise _bad(item, f"has a negative dimension in shape {item.shape}")
    if item.parameters.shared_memory_region is not None:
        raise _bad(item, "uses shared memory, which this server does not support")
    count = math.prod(item.shape)
    size = item.parameters.binary_data_size
    if size is None:
        if item.data is None:
            raise _bad(item, "has neither 'data' nor parameters.binary_data_size")
        return _json_tensor(item, count), offset
    if item.data is not None:
        raise _bad(item, "has both 'data' and parameters.binary_data_size")
    if size < 0 or offset + size > len(binary):
        raise _bad(
            item,
            f"declares binary_data_size {size} but only {len(binary) - offset} bytes of binary"
            f" data are left after the JSON header (is {HEADER_LENGTH} set?)",
        )
    raw = binary[offset : offset + size]
    _check_binary(item, raw, count)
    # item.datatype is a TensorDType: the first check of this function refused any other name
    return Tensor(dtype=item.datatype, shape=tuple(item.shape), data=raw), offset + size  # type: ignore[arg-type]


def _check_binary(item: RequestInput, raw: memoryview, count: int) -> None:
    if item.datatype == "BYTES":
        found = _count_bytes_elements(item, raw)
        if found != count:
            raise _bad(item, f"holds {found} BYTES elements; shape {item.shape} needs {count}")
        return
    need = count * _NUMPY[item.datatype].itemsize
    if len(raw) != need:
        raise _bad(
            item,
            f"binary_data_size is {len(raw)} bytes; shape {item.shape} of {item.datatype}"
            f" needs {need}",
        )


def _count_bytes_elements(item: RequestInput, raw: memoryview) -> int:
    """Walk the 4-byte little-endian length prefixes of a binary BYTES tensor."""
    pos = count = 0
    end = len(raw)
    unpack = _LENGTH.unpack_from
    while pos < end:
        if pos + 4 > end:
            raise _bad(item, "BYTES data ends inside an element's 4-byte length prefix")
        pos += 4 + unpack(raw, pos)[0]
        if pos > end:
            raise _bad(item, "BYTES element runs past the end of its binary data")
        count += 1
    return count


def _json_tensor(item: RequestInput, count: int) -> Tensor:
    if item.datatype == "BYTES":
        data = _json_bytes(item, count)
        return Tensor(dtype="BYTES", shape=tuple(item.shape), data=memoryview(data))
    array = _json_numbers(item, count)
    return Tensor(
        # a TensorDType: _input_tensor refused any other name before calling this
        dtype=item.datatype,  # type: ignore[arg-type]
        shape=tuple(item.shape),
        data=array.data.cast("B"),
    )


def _json_numbers(item: RequestInput, count: int) -> npt.NDArray[Any]:
    target = _NUMPY[item.datatype]
    try:
        raw = np.asarray(item.data)
    except (ValueError, TypeError, OverflowError):
        raise _bad(item, "has 'data' that is not a regular (flat or nested) list") from None
    if raw.size != count:
        raise _bad(item, f"has {raw.size} data elements; shape {item.shape} needs {count}")
    if count == 0:
        return np.empty(0, dtype=target)
    if raw.dtype.kind not in _JSON_KINDS[target.kind]:
        raise _bad(item, f"has 'data' that is not all {_KIND_NAMES[target.kind]}")
    if target.kind in "iu":
        info = np.iinfo(target)
        if raw.min() < info.min or raw.max() > info.max:
            raise _bad(item, f"has values outside the range of {item.datatype}")
    try:
        with np.errstate(over="raise"):
            return np.ascontiguousarray(raw.reshape(-1), dtype=target)
    except FloatingPointError:
        raise _bad(item, f"has values outside the range of {item.datatype}") from None


def _json_bytes(item: RequestInput, count: int) -> bytes:
    flat = np.asarray(item.data, dtype=object).reshape(-1)
    if flat.size != count:
        raise _bad(item, f"has {flat.size} data elements; shape {item.shape} needs {count}")
    parts: list[bytes] = []
    for element in flat:
        if not isinstance(element, str):
            raise _bad(item, "has BYTES 'data' that is not all strings")
        encoded = element.encode()
        parts.append(len(encoded).to_bytes(4, "little"))
        parts.append(encoded)
    return b"".join(parts)


def _requested_outputs(header: InferenceRequest) -> list[str]:
    outputs = [_output_name(output) for output in header.outputs]
    if len(set(outputs)) != len(outputs):
        twice = next(name for name in outputs if outputs.count(name) > 1)
        raise InvalidInput(
            f"output {twice!r} is requested more than once", details={"output": twice}
        )
    return outputs


def _output_name(output: RequestOutput) -> str:
    if output.parameters.classification:
        raise InvalidInput(
            f"output {output.name!r} asks for classification, which this server does not support",
            details={"output": output.name},
        )
    if output.parameters.shared_memory_region is not None:
        raise InvalidInput(
            f"output {output.name!r} asks for shared memory, which this server does not support",
            details={"output": output.name},
        )
    return output.name


def _binary_flags(header: InferenceRequest) -> dict[str, bool]:
    default = header.parameters.binary_data_output
    flags = {}
    for output in header.outputs:
        flag = output.parameters.binary_data
        flags[output.name] = default if flag is None else flag
    return flags


def _bad(item: RequestInput, problem: str) -> InvalidInput:
    return InvalidInput(
        f"input {item.name!r} {problem}",
        details={"input": item.name, "datatype": item.datatype, "shape": item.shape},
    )


# --- encoding -------------------------------------------------------------------------------


def encode_prediction(prediction: Prediction, request: ParsedRequest, model: str) -> InferAnswer:
    """The answer body for ``prediction``: JSON, or JSON + binary data when any output asks."""
    names = request.outputs or list(prediction.outputs)
    chunks: list[memoryview] = []
    outputs: list[ResponseOutput] = []
    for name in names:
        tensor = prediction.outputs.get(name)
        if tensor is None:
            continue
        if request.binary.get(name, request.binary_default):
            chunks.append(tensor.data)
            outputs.append(_binary_output(name, tensor))
        else:
            outputs.append(_json_output(name, tensor))
    header = _ENCODER.encode(
        InferenceResponse(
            model_name=model,
            model_version=str(prediction.version),
            id=request.id if request.id is not None else prediction.prediction_id,
            parameters={"prediction_id": prediction.prediction_id},
            outputs=outputs,
        )
    )
    if not chunks:
        return InferAnswer(body=header, header_length=None)
    return InferAnswer(body=b"".join([header, *chunks]), header_length=len(header))


def _binary_output(name: str, tensor: Tensor) -> ResponseOutput:
    return ResponseOutput(
        name=name,
        datatype=tensor.dtype,
        shape=list(tensor.shape),
        parameters={"binary_data_size": len(tensor.data)},
    )


def _json_output(name: str, tensor: Tensor) -> ResponseOutput:
    flat = tensor.to_numpy().reshape(-1)
    if tensor.dtype != "BYTES":
        data = flat.tolist()
    else:
        try:
            data = [element.decode() for element in flat]
        except UnicodeDecodeError:
            raise InvalidInput(
                f"output {name!r} holds bytes that are not UTF-8 text; ask for it with"
                " parameters.binary_data=true",
                details={"output": name},
            ) from None
    return ResponseOutput(name=name, datatype=tensor.dtype, shape=list(tensor.shape), data=data)
