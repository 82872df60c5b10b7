"""Shared contract language: value types, errors and method markers.

Everything here is plain data: msgspec Structs, exception classes and decorators that attach
metadata. Transports and the kernel read that metadata; nothing here knows about them.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Generic, Literal, TypeVar

import msgspec
import numpy as np
import numpy.typing as npt

__all__ = [
    "MAX_INT32",
    "MAX_PAGE",
    "MAX_SECONDS",
    "MAX_TIME_LIMIT_S",
    "ByteSize",
    "Conflict",
    "ContractVersionMismatch",
    "Count",
    "DeadlineExceeded",
    "Finite",
    "IntegrityError",
    "InternalError",
    "InvalidInput",
    "Limit",
    "MethodInfo",
    "MethodNotAllowed",
    "ModelLoadFailed",
    "ModelRef",
    "NotFound",
    "Page",
    "PayloadTooLarge",
    "Percent",
    "PermissionDenied",
    "PositiveCount",
    "QuarryError",
    "RateLimited",
    "RowCount",
    "Scope",
    "Seconds",
    "Seed",
    "Share",
    "Tensor",
    "TimeLimit",
    "Unauthenticated",
    "Unavailable",
    "UnprocessableInput",
    "Version",
    "error_class",
    "method",
    "method_info",
    "validate_name",
]

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------

_ERRORS: dict[str, type[QuarryError]] = {}


class QuarryError(Exception):
    """Base of every error a contract method may raise.

    Each subclass has a stable machine ``code``. A remote caller re-raises the same class from
    ``{"error": message, "code": code, "details": {...}}``; the kernel maps classes to statuses.
    """

    code: ClassVar[str] = "internal"

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = details or {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _ERRORS[cls.code] = cls

    def to_dict(self) -> dict[str, Any]:
        """The wire form shared by HTTP answers and RPC error bodies."""
        return {"error": self.message, "code": self.code, "details": self.details}

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_error, (self.code, self.message, self.details))


def _rebuild_error(code: str, message: str, details: dict[str, Any]) -> QuarryError:
    return error_class(code)(message, details=details)


def error_class(code: str) -> type[QuarryError]:
    """The error class for a machine code; unknown codes map to :class:`QuarryError`."""
    return _ERRORS.get(code, QuarryError)


class InvalidInput(QuarryError):
    """The request is malformed or breaks a documented rule (HTTP 400)."""

    code = "invalid_input"


class UnprocessableInput(QuarryError):
    """Well-formed input whose shape or type does not fit (HTTP 422)."""

    code = "unprocessable"


class Unauthenticated(QuarryError):
    """No credentials, or credentials that are not valid (HTTP 401)."""

    code = "unauthenticated"


class PermissionDenied(QuarryError):
    """Valid credentials without the scope the operation needs (HTTP 403)."""

    code = "permission_denied"


class NotFound(QuarryError):
    """The named thing does not exist (HTTP 404)."""

    code = "not_found"


class MethodNotAllowed(QuarryError):
    """The path exists but not for this HTTP method (HTTP 405)."""

    code = "method_not_allowed"


class Conflict(QuarryError):
    """The operation conflicts with the current state (HTTP 409)."""

    code = "conflict"


class PayloadTooLarge(QuarryError):
    """A body or upload over its configured limit (HTTP 413)."""

    code = "payload_too_large"


class IntegrityError(QuarryError):
    """Bytes whose hash does not match the one recorded for them."""

    code = "integrity_error"


class ContractVersionMismatch(QuarryError):
    """Caller and callee speak different major versions of a contract."""

    code = "contract_version_mismatch"


class RateLimited(QuarryError):
    """Too many requests for this key (HTTP 429 with ``Retry-After``)."""

    code = "rate_limited"

    def __init__(
        self, message: str, *, retry_after: float = 1.0, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message, details={"retry_after": retry_after, **(details or {})})
        self.retry_after = float(self.details["retry_after"])


class Unavailable(QuarryError):
    """A dependency cannot be reached or is overloaded (HTTP 503 with ``Retry-After``)."""

    code = "unavailable"

    def __init__(
        self, message: str, *, retry_after: float = 1.0, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message, details={"retry_after": retry_after, **(details or {})})
        self.retry_after = float(self.details["retry_after"])


class ModelLoadFailed(QuarryError):
    """A model version failed to load or warm up, so it cannot serve (HTTP 503 with
    ``Retry-After``: when the load is tried again). The message says why.

    Not an :class:`Unavailable`: the module is up and serves its other models, so a remote
    caller neither retries the call nor counts it against the module's circuit breaker.
    """

    code = "model_load_failed"

    def __init__(
        self, message: str, *, retry_after: float = 30.0, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message, details={"retry_after": retry_after, **(details or {})})
        self.retry_after = float(self.details["retry_after"])


class DeadlineExceeded(QuarryError):
    """The call's deadline passed before it finished (HTTP 504)."""

    code = "deadline_exceeded"


class InternalError(QuarryError):
    """An unexpected failure; the message never carries a stack trace."""

    code = "internal"


_ERRORS["internal"] = InternalError

# --------------------------------------------------------------------------------------------
# Method markers
# --------------------------------------------------------------------------------------------


class Scope(StrEnum):
    """API scopes. ``admin`` covers every other scope."""

    ADMIN = "admin"
    READ = "read"
    PREDICT = "predict"
    INGEST = "ingest"
    TRAIN = "train"


class MethodInfo(msgspec.Struct, frozen=True, kw_only=True):
    """What a transport needs to know about a contract method beyond its types."""

    scope: Scope
    idempotent: bool
    streaming: bool


_METHOD_ATTR = "__quarry_method__"


def method(*, scope: Scope, idempotent: bool = False, streaming: bool = False) -> Callable[[F], F]:
    """Mark a Protocol method with its API scope and whether it is idempotent or streaming.

    Idempotent methods may be retried by transports. Streaming methods are plain ``def`` methods
    that return an ``AsyncIterator`` of Structs; every other method is ``async def``.
    """

    def mark(fn: F) -> F:
        setattr(
            fn, _METHOD_ATTR, MethodInfo(scope=scope, idempotent=idempotent, streaming=streaming)
        )
        return fn

    return mark


def method_info(fn: Callable[..., Any]) -> MethodInfo | None:
    """The marker :func:`method` attached, or ``None`` for unmarked callables."""
    info = getattr(fn, _METHOD_ATTR, None)
    return info if isinstance(info, MethodInfo) else None


# --------------------------------------------------------------------------------------------
# Bounded numbers: every numeric field of a contract says its range here, once. Decoding a body,
# an RPC message or a path/query parameter checks it, so a value no column, buffer or timer can
# hold is a 400 at the door instead of an overflow deep inside (NaN is outside every range).
# --------------------------------------------------------------------------------------------

MAX_INT32 = 2**31 - 1
"""The largest value a signed 32-bit column holds (PostgreSQL ``INTEGER``)."""
MAX_PAGE = 500
"""The largest page any list answers (a module may allow less)."""
MAX_SECONDS = 366 * 86400.0
"""The longest duration a contract carries: a year (windows, intervals, TTLs, latencies)."""
MAX_TIME_LIMIT_S = 30 * 86400.0
"""The hard ceiling of a job's time limit: 30 days (a module may set a lower maximum)."""

Version = Annotated[int, msgspec.Meta(ge=1, le=MAX_INT32)]
"""A version number of a model, feature view or feature service: 1 to 2**31 - 1."""
Count = Annotated[int, msgspec.Meta(ge=0, le=MAX_INT32)]
"""A number of things (rows, requests, attempts, epochs) or a row offset: 0 to 2**31 - 1."""
PositiveCount = Annotated[int, msgspec.Meta(ge=1, le=MAX_INT32)]
"""A size that must hold something (rows per chunk, buckets, categories): 1 to 2**31 - 1."""
ByteSize = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
"""A number of bytes or a byte offset: 0 to 2**63 - 1 (PostgreSQL ``BIGINT``)."""
RowCount = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
"""Rows in a store, which may pass 2**31: 0 to 2**63 - 1 (PostgreSQL ``BIGINT``)."""
Seed = Annotated[int, msgspec.Meta(ge=0, le=2**32 - 1)]
"""A random seed: 0 to 2**32 - 1, what numpy and torch accept."""
Limit = Annotated[int, msgspec.Meta(ge=1, le=MAX_PAGE)]
"""A page size: 1 to :data:`MAX_PAGE`."""
Seconds = Annotated[float, msgspec.Meta(ge=0, le=MAX_SECONDS)]
"""A duration in seconds: finite, not negative, at most :data:`MAX_SECONDS`."""
TimeLimit = Annotated[float, msgspec.Meta(gt=0, le=MAX_TIME_LIMIT_S)]
"""The longest a run may take, in seconds: positive, at most :data:`MAX_TIME_LIMIT_S`."""
Share = Annotated[float, msgspec.Meta(ge=0, le=1)]
"""A fraction from 0 to 1 (a rate, a share of rows or columns)."""
Percent = Annotated[float, msgspec.Meta(ge=0, le=100)]
"""A percentage from 0 to 100."""
Finite = Annotated[float, msgspec.Meta(ge=-sys.float_info.max, le=sys.float_info.max)]
"""Any finite float: neither infinite nor NaN."""

# --------------------------------------------------------------------------------------------
# Value types
# --------------------------------------------------------------------------------------------

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
_NAME_RE = re.compile(NAME_PATTERN)

MAX_REF_VERSION = 2**63 - 1
"""The largest version number a :class:`ModelRef` carries (a signed 64-bit integer)."""
_VERSION_RE = re.compile(r"[0-9]{1,19}")


def validate_name(value: str, *, what: str = "name") -> str:
    """Return ``value`` if it is a valid Quarry name, else raise :class:`InvalidInput`.

    Names start with a letter or digit and hold at most 128 letters, digits, ``_``, ``.``, ``-``;
    that keeps every name safe as a path segment (no ``/``, no leading ``.``).
    """
    if not isinstance(value, str) or not _NAME_RE.fullmatch(value):
        raise InvalidInput(
            f"invalid {what} {value!r}: expected 1-128 letters, digits, '_', '.', '-',"
            " starting with a letter or digit",
            details={"field": what, "value": str(value)[:200], "pattern": NAME_PATTERN},
        )
    return value


class ModelRef(msgspec.Struct, frozen=True, kw_only=True):
    """A reference to a model: ``name:N`` (a version), ``name@alias`` or a bare ``name``.

    A bare name resolves to the deployment of that name if there is one, else the ``champion``
    alias, else the highest live version.
    """

    name: str
    version: int | None = None
    alias: str | None = None

    @classmethod
    def parse(cls, text: str) -> ModelRef:
        """Parse the textual form; raises :class:`InvalidInput` on anything else."""
        if not isinstance(text, str) or not text:
            raise InvalidInput("empty model reference", details={"field": "model_ref"})
        if "@" in text:
            name, _, alias = text.partition("@")
            return cls(name=validate_name(name), alias=validate_name(alias, what="alias"))
        if ":" in text:
            name, _, version = text.partition(":")
            # ASCII digits only (str.isdigit also takes '²' and other scripts' digits), and at
            # most 64 bits so that the reference crosses the wire (msgpack) like any other
            if not _VERSION_RE.fullmatch(version) or not 1 <= int(version) <= MAX_REF_VERSION:
                raise InvalidInput(
                    f"invalid version in model reference {text[:200]!r}: expected a positive"
                    f" integer up to {MAX_REF_VERSION}",
                    details={"field": "model_ref", "value": text[:200]},
                )
            return cls(name=validate_name(name), version=int(version))
        return cls(name=validate_name(text))

    def __str__(self) -> str:
        if self.version is not None:
            return f"{self.name}:{self.version}"
        if self.alias is not None:
            return f"{self.name}@{self.alias}"
        return self.name


class Page(msgspec.Struct, Generic[T], frozen=True, kw_only=True):
    """One page of a list: its items and an opaque cursor for the next (``None`` at the end)."""

    items: list[T]
    next_cursor: str | None = None


TensorDType = Literal[
    "BOOL",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "FP16",
    "FP32",
    "FP64",
    "BYTES",
]

_TO_NUMPY: dict[str, str] = {
    "BOOL": "bool",
    "UINT8": "uint8",
    "UINT16": "uint16",
    "UINT32": "uint32",
    "UINT64": "uint64",
    "INT8": "int8",
    "INT16": "int16",
    "INT32": "int32",
    "INT64": "int64",
    "FP16": "float16",
    "FP32": "float32",
    "FP64": "float64",
}
_FROM_NUMPY = {v: k for k, v in _TO_NUMPY.items()}
_LITTLE: dict[str, np.dtype[Any]] = {k: np.dtype(v).newbyteorder("<") for k, v in _TO_NUMPY.items()}
"""Each numeric dtype as the little-endian numpy dtype a tensor's bytes hold."""
_CODES: dict[np.dtype[Any], str] = {dtype: k for k, dtype in _LITTLE.items()}
"""The other way: arrays of these dtypes hold a tensor's bytes as they are."""


class Tensor(msgspec.Struct, frozen=True, kw_only=True):
    """An n-dimensional array: Open Inference Protocol dtype, shape and raw little-endian bytes.

    ``data`` decodes from msgpack without a copy. ``BYTES`` tensors use the protocol's layout:
    each element is a 4-byte little-endian length followed by that many bytes.
    """

    dtype: TensorDType
    shape: tuple[Count, ...]
    data: memoryview

    @classmethod
    def from_numpy(cls, array: npt.ArrayLike) -> Tensor:
        """Build a tensor from anything numpy can turn into an array."""
        arr = np.asarray(array)
        code = _CODES.get(arr.dtype)
        if code is not None and arr.flags.c_contiguous:  # its own bytes, without a copy
            return cls(dtype=code, shape=arr.shape, data=arr.reshape(-1).data.cast("B"))  # type: ignore[arg-type]
        if arr.dtype.kind in "USO":
            return cls(dtype="BYTES", shape=arr.shape, data=memoryview(_pack_bytes(arr)))
        name = arr.dtype.name
        if name not in _FROM_NUMPY:
            raise InvalidInput(f"unsupported tensor dtype {name!r}", details={"dtype": name})
        little = arr.astype(arr.dtype.newbyteorder("<"), copy=False)
        return cls(
            dtype=_FROM_NUMPY[name],  # type: ignore[arg-type]
            shape=arr.shape,
            # flat first: a view with a zero-length dimension cannot be cast as it is
            data=memoryview(np.ascontiguousarray(little).reshape(-1).data).cast("B"),
        )

    def to_numpy(self) -> npt.NDArray[Any]:
        """A numpy view of the data (object array of ``bytes`` for ``BYTES``)."""
        count = 1
        for dim in self.shape:
            count *= dim
        if self.dtype == "BYTES":
            return _unpack_bytes(self.data, count).reshape(self.shape)
        dtype = _LITTLE[self.dtype]
        if len(self.data) != count * dtype.itemsize:
            raise InvalidInput(
                f"tensor data holds {len(self.data)} bytes; shape {list(self.shape)} of"
                f" {self.dtype} needs {count * dtype.itemsize}",
                details={"shape": list(self.shape), "dtype": self.dtype},
            )
        return np.frombuffer(self.data, dtype=dtype).reshape(self.shape)

    def to_list(self) -> Any:
        """The tensor as nested Python lists, as a JSON answer shows it: ``BYTES`` elements as
        ``str`` where they are UTF-8 text (class labels: ``["setosa", ...]``), else ``bytes``."""
        array = self.to_numpy()
        if self.dtype == "BYTES" and array.size:
            array = _AS_TEXT(array)
        return array.tolist()


def _pack_bytes(arr: npt.NDArray[Any]) -> bytes:
    parts: list[bytes] = []
    for item in arr.reshape(-1):
        raw = item if isinstance(item, bytes) else str(item).encode()
        parts.append(len(raw).to_bytes(4, "little"))
        parts.append(raw)
    return b"".join(parts)


def _as_text(value: bytes) -> str | bytes:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value


_AS_TEXT = np.frompyfunc(_as_text, 1, 1)


def _unpack_bytes(data: memoryview, count: int) -> npt.NDArray[Any]:
    out = np.empty(count, dtype=object)
    pos = 0
    for i in range(count):
        if pos + 4 > len(data):
            raise InvalidInput("BYTES tensor data ends before all elements were read")
        size = int.from_bytes(data[pos : pos + 4], "little")
        pos += 4
        if pos + size > len(data):
            raise InvalidInput("BYTES tensor element runs past the end of the data")
        out[i] = bytes(data[pos : pos + size])
        pos += size
    if pos != len(data):
        raise InvalidInput("BYTES tensor data holds more bytes than its shape needs")
    return out
