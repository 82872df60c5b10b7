"""Reference profiles from uploaded rows: feed the model its input columns, run it, profile.

Column names (see :class:`contracts.registry.SetReference`): an input is fed from the column
named after it, or, for an input of shape ``[N, k]``, from ``k`` scalar columns: the version's
recorded input columns (``lineage.extra["columns"]``, a JSON list) when the model has one input,
else ``<input>_0`` ... ``<input>_<k-1>``. A ``label`` column is no input; other columns are
ignored. The profile describes the model's first input, as monitoring reads it from logged
predictions, and is built as training builds it (:mod:`app.kernel.reference_profile`).

The model runs here with ONNX Runtime on the CPU, built from the stored bytes with the session
options inference uses (:func:`app.kernel.onnx_external.harden_session_options`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from app.kernel.onnx_external import harden_session_options
from app.kernel.reference_profile import reference_profile
from contracts.common import InvalidInput
from contracts.registry import ReferenceProfile, Task, TensorSpec, VersionInfo

__all__ = ["LABEL", "build_reference", "input_columns"]

LABEL = "label"
"""The column holding the true label of each row (optional; never a model input)."""

Array = npt.NDArray[Any]
_NUMPY = {"FP16": "float16", "FP32": "float32", "FP64": "float64"}
_MAX_MESSAGE = 300


def input_columns(info: VersionInfo, spec: TensorSpec) -> list[str]:
    """The scalar columns that feed the ``[N, k]`` input ``spec`` (empty when ``k`` is not
    known and nothing is recorded)."""
    recorded = _recorded(info) if len(info.signature.inputs) == 1 else []
    width = spec.shape[1] if len(spec.shape) == 2 else -1
    if recorded and (width < 0 or width == len(recorded)):
        return recorded
    return [f"{spec.name}_{i}" for i in range(max(width, 0))]


def build_reference(
    info: VersionInfo,
    data: bytes,
    columns: Mapping[str, Array],
    *,
    task: Task | None,
    classes: list[str],
    seed: int,
) -> ReferenceProfile:
    """Run version ``info`` (its ONNX bytes ``data``) on ``columns`` and profile them."""
    rows = _rows(columns)
    feeds: dict[str, Array] = {}
    names: list[str] = []
    for position, spec in enumerate(info.signature.inputs):
        fed, fed_names = _feed(info, spec, columns)
        feeds[spec.name] = fed
        if position == 0:
            names = fed_names
    if classes and LABEL in columns and LABEL not in feeds:
        _check_labels(columns[LABEL], classes)
    first = info.signature.inputs[0]
    if first.dtype == "BYTES":
        raise InvalidInput(
            f"a reference profile describes the model's first input, and {first.name!r} holds"
            " text: only numeric inputs can be profiled",
            details={"input": first.name},
        )
    outputs = _run(info, data, feeds)
    predictions = {k: v for k, v in outputs.items() if v.ndim >= 1 and len(v) == rows}
    x = np.asarray(feeds[first.name], dtype=np.float32).reshape(rows, -1)
    return reference_profile(names, x, predictions, task=task, seed=seed)


def _rows(columns: Mapping[str, Array]) -> int:
    lengths = {name: len(values) for name, values in columns.items()}
    if not lengths or not max(lengths.values()):
        raise InvalidInput("the reference holds no rows", details={"field": "rows"})
    rows = max(lengths.values())
    short = next((name for name, n in lengths.items() if n != rows), None)
    if short is not None:
        raise InvalidInput(
            f"column {short!r} holds {lengths[short]} values, other columns {rows}",
            details={"column": short},
        )
    return rows


def _feed(
    info: VersionInfo, spec: TensorSpec, columns: Mapping[str, Array]
) -> tuple[Array, list[str]]:
    rank = len(spec.shape)
    if spec.name in columns:
        values = _typed(np.asarray(columns[spec.name]), spec, spec.name)
        if rank == 2 and values.ndim == 1:
            values = values[:, None]
        width = values.shape[1] if values.ndim == 2 else 1
        if values.ndim != rank or (rank == 2 and spec.shape[1] not in (-1, width)):
            raise InvalidInput(
                f"column {spec.name!r} gives input {spec.name!r} the shape"
                f" {[len(values), *values.shape[1:]]}; it takes {spec.shape} (-1: any)",
                details={"column": spec.name, "input": spec.name},
            )
        return values, [f"{spec.name}_{i}" for i in range(width)] if rank == 2 else [spec.name]
    names = input_columns(info, spec) if rank == 2 else []
    missing = next((n for n in names if n not in columns), None) if names else spec.name
    if missing is not None:
        wanted = f"{', '.join(names[:5])}{', ...' if len(names) > 5 else ''}" if names else ""
        raise InvalidInput(
            f"the reference has no column {missing!r} for input {spec.name!r}"
            + (
                f" (it takes columns {wanted}, or one list-valued column {spec.name!r})"
                if wanted
                else ""
            ),
            details={"column": missing, "input": spec.name},
        )
    parts = []
    for name in names:
        column = np.asarray(columns[name])
        if column.ndim != 1:
            raise InvalidInput(
                f"column {name!r} must hold one value per row", details={"column": name}
            )
        parts.append(_typed(column, spec, name))
    return np.column_stack(parts), names


def _typed(values: Array, spec: TensorSpec, column: str) -> Array:
    if spec.dtype == "BYTES":
        return np.vectorize(_text, otypes=[object])(values) if values.size else values
    target = np.dtype(_NUMPY.get(spec.dtype, spec.dtype.lower()))
    if values.dtype.kind not in "biuf":
        raise InvalidInput(
            f"column {column!r} holds {_kind(values)}; input {spec.name!r} takes {spec.dtype}",
            details={"column": column, "input": spec.name, "dtype": spec.dtype},
        )
    whole = values.dtype.kind != "f" or np.all(np.isfinite(values) & (values == np.round(values)))
    if target.kind in "iub" and not whole:
        raise InvalidInput(
            f"column {column!r} holds fractions or missing values; input {spec.name!r}"
            f" takes {spec.dtype}",
            details={"column": column, "input": spec.name, "dtype": spec.dtype},
        )
    return values.astype(target)


def _kind(values: Array) -> str:
    if values.dtype.kind in "USO":
        return "text"
    return f"values of type {values.dtype.name}"


def _text(value: Any) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def _label_text(value: Any) -> str:
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    return _text(value)


def _check_labels(labels: Array, classes: list[str]) -> None:
    known = set(classes)
    unknown = sorted({_label_text(v) for v in np.asarray(labels).ravel()} - known)
    if unknown:
        raise InvalidInput(
            f"column {LABEL!r} holds {len(unknown)} value(s) that are not classes of the model,"
            f" e.g. {unknown[0][:100]!r}; the classes are {', '.join(classes[:20])}",
            details={"column": LABEL, "unknown": unknown[:10]},
        )


def _recorded(info: VersionInfo) -> list[str]:
    text = info.lineage.extra.get("columns")
    try:
        value = json.loads(text) if text else None
    except ValueError:
        return []
    return [str(v) for v in value] if isinstance(value, list) else []


def _run(info: VersionInfo, data: bytes, feeds: dict[str, Array]) -> dict[str, Array]:
    try:
        import onnxruntime as ort
    except ImportError:  # pragma: no cover - every install has one runtime
        raise InvalidInput(
            "building a reference profile runs the model, and ONNX Runtime is not installed"
            " here: install quarryml[cpu] or quarryml[gpu]"
        ) from None
    options = harden_session_options(ort.SessionOptions())
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(
            data, sess_options=options, providers=["CPUExecutionProvider"]
        )
        names = [o.name for o in session.get_outputs()]
        outputs = session.run(names, feeds)
    except Exception as exc:
        message = " ".join(str(exc).split())[:_MAX_MESSAGE]
        raise InvalidInput(
            f"model {info.name}:{info.version} failed to run on the reference rows: {message}",
            details={"model": info.name, "version": info.version},
        ) from None
    return {name: np.asarray(value) for name, value in zip(names, outputs, strict=True)}
