"""ONNX Runtime sessions: choosing execution providers, loading verified bytes, an LRU of models.

``onnxruntime`` is imported only inside functions, so this module imports without it; using it
then fails with a message saying which extra to install.

A model is data, never a path to the host. Sessions are built from bytes, with no model path;
a model with external data anywhere in it is refused before ONNX Runtime sees it (the registry
refuses it at upload too, so this guards against artifacts that bypassed the registry), and the
session options leave ONNX Runtime nothing to resolve an external-data location against: its
folder is ``/dev/null``, under which no file can exist, so the working directory is irrelevant.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import ModuleType
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar, cast

import numpy as np
import numpy.typing as npt

from app.kernel.onnx_external import harden_session_options
from app.kernel.settings import ConfigError
from app.modules.inference.inputs import numpy_dtype
from contracts.common import (
    IntegrityError,
    InternalError,
    InvalidInput,
    QuarryError,
    Unavailable,
    UnprocessableInput,
)
from contracts.registry import Lineage, Signature, TensorSpec

if TYPE_CHECKING:
    import onnxruntime

__all__ = [
    "TINY_RUN_S",
    "LoadedModel",
    "ModelCache",
    "load_model",
    "ort_error",
    "select_providers",
]

Array = npt.NDArray[Any]
Key = tuple[str, int]

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
_SHORT_NAMES = {"cpu": CPU, "cuda": CUDA, "tensorrt": "TensorrtExecutionProvider"}
_MAX_MESSAGE = 400
_OUT_OF_MEMORY = ("Failed to allocate memory", "bad_alloc", "out of memory")
"""How ONNX Runtime's messages say an allocation failed (its exceptions carry no such kind)."""
TINY_RUN_S = 50e-6
"""A CPU model whose one-row run takes less than this (seconds) gets one intra-op thread when
``QUARRY_INFERENCE_THREADS`` is 0 (one per core): waking a pool of threads costs more than such
a run, and the run then takes less time and CPU on the caller's thread alone."""
_TINY_PROBES = 5
_TINY_PROBE_BYTES = 1 << 20
"""A probe feed larger than this is not made: such a model is not tiny."""
_log = logging.getLogger("quarry.inference")


def _ort() -> ModuleType:
    try:
        import onnxruntime
    except ImportError as exc:
        raise ConfigError(
            f"ONNX Runtime cannot be imported ({exc}); model serving needs exactly one of"
            " `pip install quarryml[cpu]` (onnxruntime) or `pip install quarryml[gpu]`"
            " (onnxruntime-gpu)"
        ) from None
    return cast(ModuleType, onnxruntime)  # untyped (no stubs): the module object itself


def select_providers(setting: str) -> list[str]:
    """The execution providers to ask ONNX Runtime for, from ``QUARRY_INFERENCE_PROVIDERS``.

    ``auto`` asks for CUDA then CPU when CUDA really loads here (probed once with a tiny session:
    ``onnxruntime-gpu`` lists CUDA even on a machine without a GPU), else CPU alone; what each
    model runs on shows in :attr:`LoadedModel.providers`. Otherwise the setting is a
    comma-separated list of provider names (``cpu``, ``cuda``, ``tensorrt`` are short for
    theirs); a name this build lacks raises :class:`ConfigError`.
    """
    available = list(_ort().get_available_providers())
    if setting.strip().lower() == "auto":
        return [CUDA, CPU] if CUDA in available and _cuda_loads() else [CPU]
    names = [_SHORT_NAMES.get(part.strip().lower(), part.strip()) for part in setting.split(",")]
    unknown = [name for name in names if name not in available]
    if not names or "" in names or unknown:
        raise ConfigError(
            f"QUARRY_INFERENCE_PROVIDERS={setting!r} is not valid: expected 'auto' or a"
            f" comma-separated list of {', '.join(available)}"
        )
    return list(dict.fromkeys(names))


@functools.cache
def _cuda_loads() -> bool:
    """Whether a session really gets the CUDA provider (once per process, ORT's noise muted)."""
    from onnx import TensorProto, helper

    ort = _ort()
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    options = ort.SessionOptions()
    options.log_severity_level = 4
    ort.set_default_logger_severity(4)
    try:
        session = ort.InferenceSession(
            model.SerializeToString(),
            sess_options=options,
            providers=[CUDA, CPU],
        )
        return CUDA in session.get_providers()
    except Exception:
        return False
    finally:
        ort.set_default_logger_severity(2)


@dataclass(eq=False, kw_only=True)
class LoadedModel:
    """A model version with its ONNX Runtime session, ready to run.

    ``providers`` are the ones the session really uses (``session.get_providers()``), not the
    ones asked for. ``size`` is the artifact's byte count, which :class:`ModelCache` bounds.
    """

    name: str
    version: int
    sha256: str
    size: int
    signature: Signature
    session: onnxruntime.InferenceSession
    providers: tuple[str, ...]
    loaded_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    lineage: Lineage = field(default_factory=Lineage)
    """Where the version came from: predicting by entity reads its feature service here."""
    classes: list[str] = field(default_factory=list)
    """The version's class labels: answers name the predicted class of each row."""
    output_names: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self.output_names = [output.name for output in self.session.get_outputs()]

    def run(self, feeds: dict[str, Array]) -> dict[str, Array]:
        """Run the session on ``feeds`` (blocking; call it off the event loop).

        ONNX Runtime failures become :class:`UnprocessableInput` (bad input values or shapes)
        or :class:`InternalError`, with ONNX Runtime's message and no stack trace.
        """
        try:
            outputs = self.session.run(self.output_names, feeds)
        except Exception as exc:
            raise ort_error(exc, f"model {self.name}:{self.version} failed to run") from None
        return dict(zip(self.output_names, outputs, strict=True))

    def warm_up(self, max_rows: int = 1, *, max_bytes: int | None = None) -> bool:
        """Run synthetic batches (zeros, empty strings) of 1 and ``max_rows`` rows.

        The first real request is then not the one paying for ONNX Runtime's lazy set-up.
        Answers whether it ran: a model that cannot take zeros (ONNX Runtime refuses the values
        or the guessed sizes of dynamic dimensions) is logged, not refused. What no request
        could get past raises: a feed larger than ``max_bytes`` (:class:`InvalidInput`),
        ONNX Runtime failing to allocate memory (:class:`InternalError`), a ``MemoryError``.
        """
        for rows in sorted({1, max(1, max_rows)}):
            feeds = {spec.name: _synthetic(spec, rows, max_bytes) for spec in self.signature.inputs}
            try:
                self.run(feeds)
            except QuarryError as exc:
                if any(sign in exc.message for sign in _OUT_OF_MEMORY):
                    raise
                _log.warning("warm-up of %s:%s skipped: %s", self.name, self.version, exc.message)
                return False
        return True


def _synthetic(spec: TensorSpec, rows: int, max_bytes: int | None) -> Array:
    shape = [rows if i == 0 else 1 for i in range(len(spec.shape))]
    shape = [want if want >= 0 else got for want, got in zip(spec.shape, shape, strict=True)]
    dtype = np.dtype(object) if spec.dtype == "BYTES" else np.dtype(numpy_dtype(spec.dtype))
    size = math.prod(shape) * dtype.itemsize
    if max_bytes is not None and size > max_bytes:
        raise InvalidInput(
            f"input {spec.name!r} of shape {shape} takes {size} bytes, over the limit of"
            f" {max_bytes} (QUARRY_MAX_TENSOR_BYTES)",
            details={"input": spec.name, "bytes": size, "max": max_bytes},
        )
    if spec.dtype == "BYTES":
        return np.full(shape, "", dtype=object)
    return np.zeros(shape, dtype=dtype)


def load_model(
    name: str,
    version: int,
    data: bytes,
    signature: Signature,
    *,
    providers: list[str],
    intra_op_threads: int,
    sha256: str,
) -> LoadedModel:
    """Verify ``data`` against ``sha256`` and open an ONNX Runtime session on it (blocking).

    Raises :class:`IntegrityError` on a hash mismatch, :class:`InvalidInput` when the model keeps
    tensors in external files or ONNX Runtime refuses it, and :class:`Unavailable` when it fails
    for other reasons (memory, device) or none of the asked-for providers loaded.
    ``intra_op_threads`` 0 means one per core, or one for a CPU model measured tiny
    (:data:`TINY_RUN_S`).
    """
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise IntegrityError(
            f"model {name}:{version} bytes hash to {digest}, not the recorded {sha256}",
            details={"model": name, "version": version},
        )
    _refuse_external_data(name, version, data)
    ort = _ort()
    label = f"{name}:{version}"
    session = _open(ort, data, label, providers=providers, threads=intra_op_threads)
    granted = tuple(session.get_providers())
    _check_providers(name, version, providers, granted)
    if intra_op_threads == 0 and granted[0] == CPU and _tiny(session, signature):
        session = _open(ort, data, label, providers=providers, threads=1)
        _log.debug("model %s runs a row in under %s s: one intra-op thread", label, TINY_RUN_S)
    return LoadedModel(
        name=name,
        version=version,
        sha256=sha256,
        size=len(data),
        signature=signature,
        session=session,
        providers=granted,
    )


def _open(
    ort: ModuleType, data: bytes, label: str, *, providers: list[str], threads: int
) -> onnxruntime.InferenceSession:
    try:
        return ort.InferenceSession(
            data, sess_options=_session_options(ort, threads), providers=providers
        )
    except Exception as exc:
        raise ort_error(exc, f"ONNX Runtime cannot load model {label}", load=True) from None


def _tiny(session: onnxruntime.InferenceSession, signature: Signature) -> bool:
    """Whether one synthetic row runs in under :data:`TINY_RUN_S` (best of a few runs after
    the first); ``False`` for a model that cannot take zeros or empty strings."""
    try:
        feeds = {spec.name: _synthetic(spec, 1, _TINY_PROBE_BYTES) for spec in signature.inputs}
        session.run(None, feeds)  # the first run pays for lazy set-up
        best = math.inf
        for _ in range(_TINY_PROBES):
            started = time.perf_counter()
            session.run(None, feeds)
            best = min(best, time.perf_counter() - started)
    except Exception:
        return False
    return best < TINY_RUN_S


def _refuse_external_data(name: str, version: int, data: bytes) -> None:
    import onnx

    from app.kernel.onnx_external import external_tensors

    try:
        model = onnx.load_model_from_string(data)
    except Exception:
        return  # ONNX Runtime cannot parse it either, and says why; the options still guard
    external = external_tensors(model)
    if external:
        raise InvalidInput(
            f"model {name}:{version} keeps {len(external)} tensor(s) in external files (first at"
            f" {external[0][:_MAX_MESSAGE]}); a served model must hold every tensor in its bytes",
            details={"model": name, "version": version, "reason": "external_data"},
        )


def _session_options(ort: ModuleType, intra_op_threads: int) -> onnxruntime.SessionOptions:
    options = harden_session_options(ort.SessionOptions())
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # Intra-op threads that finish a run spin for work by default: with two of them on a
    # serving host, an idle server burned over a core and starved training processes and the
    # event loop. Sleeping threads cost a wake-up per run, far less than what spinning took.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def _check_providers(name: str, version: int, asked: list[str], granted: tuple[str, ...]) -> None:
    if granted and granted[0] == asked[0]:
        return
    if not set(asked) & set(granted):
        raise Unavailable(
            f"model {name}:{version}: none of the execution providers {', '.join(asked)} loaded"
            f" (ONNX Runtime offers {', '.join(granted)}); see its log for why, or change"
            " QUARRY_INFERENCE_PROVIDERS",
            retry_after=30,
            details={"model": name, "version": version, "providers": list(granted)},
        )
    _log.warning(
        "model %s:%s runs on %s: %s did not load (see ONNX Runtime's log for why)",
        name,
        version,
        ", ".join(granted),
        asked[0],
    )


_LOAD_REFUSALS = frozenset(
    {"InvalidProtobuf", "InvalidGraph", "InvalidArgument", "NotImplemented", "Fail", "NoModel"}
)


def ort_error(exc: Exception, what: str, *, load: bool = False) -> QuarryError:
    """The Quarry error for an ONNX Runtime exception, with its message cut short.

    At load time a model ONNX Runtime refuses is :class:`InvalidInput` and anything else
    :class:`Unavailable`; at run time ``INVALID_ARGUMENT`` is :class:`UnprocessableInput` and
    anything else :class:`InternalError`.
    """
    if isinstance(exc, QuarryError):
        return exc
    kind = type(exc).__name__
    text = " ".join(str(exc).split()) or kind
    message = f"{what}: {text[:_MAX_MESSAGE]}"
    details = {"reason": kind}
    if load:
        if kind in _LOAD_REFUSALS:
            return InvalidInput(message, details=details)
        return Unavailable(message, retry_after=30, details=details)
    if kind == "InvalidArgument":
        return UnprocessableInput(message, details=details)
    return InternalError(message, details=details)


class Sized(Protocol):
    """What :class:`ModelCache` holds: anything that knows its artifact's byte count."""

    @property
    def size(self) -> int:
        """Artifact bytes."""
        ...


M = TypeVar("M", bound=Sized)


class ModelCache(Generic[M]):
    """Loaded models by ``(name, version)``, least recently used first out.

    Bounded by count and by total artifact bytes; the model just put is never evicted, so one
    model larger than ``max_bytes`` still serves alone. Eviction only drops the cache's
    reference: requests holding the model finish on it. Use from one thread (the event loop).
    It holds :class:`LoadedModel` or anything sized (the loader's served models).
    """

    def __init__(self, *, max_models: int, max_bytes: int) -> None:
        self.max_models = max_models
        self.max_bytes = max_bytes
        self._models: OrderedDict[Key, M] = OrderedDict()
        self._bytes = 0

    def peek(self, key: Key) -> M | None:
        """The model under ``key`` without marking it used, or ``None``."""
        return self._models.get(key)

    def get(self, key: Key) -> M | None:
        """The model under ``key`` (marked most recently used), or ``None``."""
        model = self._models.get(key)
        if model is not None:
            self._models.move_to_end(key)
        return model

    def put(self, key: Key, model: M) -> list[Key]:
        """Add or replace ``key``; answers the keys evicted to stay within bounds, oldest first."""
        return [evicted for evicted, _ in self.add(key, model)]

    def add(self, key: Key, model: M) -> list[tuple[Key, M]]:
        """:meth:`put`, answering what was evicted with the models it held."""
        self.remove(key)
        self._models[key] = model
        self._bytes += model.size
        evicted: list[tuple[Key, M]] = []
        while len(self._models) > 1 and (
            len(self._models) > self.max_models or self._bytes > self.max_bytes
        ):
            oldest, held = next(iter(self._models.items()))
            self.remove(oldest)
            evicted.append((oldest, held))
        return evicted

    def remove(self, key: Key) -> M | None:
        """Drop ``key``; answers the model it held, if any."""
        model = self._models.pop(key, None)
        if model is not None:
            self._bytes -= model.size
        return model

    @property
    def total_bytes(self) -> int:
        """Artifact bytes of every cached model."""
        return self._bytes

    def items(self) -> list[tuple[Key, M]]:
        """Every entry, least recently used first."""
        return list(self._models.items())

    def __contains__(self, key: object) -> bool:
        return key in self._models

    def __len__(self) -> int:
        return len(self._models)
