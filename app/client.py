"""What ``app.connect()`` adds on the caller's side: predict inputs as plain Python data.

``q.inference.predict(Predict(model=..., inputs=...))`` takes, for each input, a
:class:`~contracts.common.Tensor` or anything this module turns into one before the request
leaves the caller:

- a numpy array, a list (nested for more dimensions), a tuple or a scalar;
- a pandas ``DataFrame`` (its values, columns in order: ``[rows, columns]``) or ``Series``;
- a dict of columns, ``{"age": [...], "income": [...]}``: stacked side by side, in the dict's
  order, like a DataFrame.

**Number types.** JSON-like data has no float32, so a request with any converted input is sent
with ``coerce=True``: the server converts its numbers to the dtypes of the model's signature
when every value fits (float64 to FP32 as long as nothing overflows to infinity; to an integer
type only whole numbers in range), and refuses the request (422) otherwise. Inputs already given
as ``Tensor`` keep the exact rule (``coerce`` as the request sets it).

pandas is never required: it is only looked at when a value is a pandas object.

**Models trained elsewhere.** ``q.registry.register_sklearn(estimator, sample=df, name=...)``
(and ``register_xgboost``, ``register_lightgbm``) converts a fitted model to ONNX here, in the
caller's process, with skl2onnx or onnxmltools (``pip install quarryml[convert]``), registers it
with its task and classes (``estimator.classes_`` as text, or ``classes=`` to name them), and
gives it a reference profile from ``sample``: drift checks then work as for a Quarry-trained
model. The sample's columns are recorded as the version's input columns
(``lineage.extra["columns"]``). Nothing is pickled and nothing runs on the server but ONNX.
``q.registry.set_reference(SetReference(..., columns=...))`` takes plain data for each column
too (arrays, lists, a pandas Series), or ``columns=df`` for every column of a DataFrame.

**Training sets as frames.** ``q.features.historical_frame(GetHistoricalFeatures(...))``
answers a point-in-time retrieval as a pandas ``DataFrame`` (``historical_table``: a pyarrow
``Table``, for callers without pandas), ``event_timestamp`` as UTC times. With an ``output``
the server writes the Parquet file and the frame is read back from it (a local path must be
reachable from the caller too; an ``s3://`` URL is read with the caller's AWS variables).
pyarrow (``pip install 'quarryml[sources]'``) is needed for both, pandas for the frame.
"""

from __future__ import annotations

import asyncio
import copy
import importlib
import importlib.util
import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import msgspec
import numpy as np

from app.kernel.s3 import arrow_filesystem
from contracts.common import InvalidInput, Tensor
from contracts.features import EVENT_TIMESTAMP, GetHistoricalFeatures, Value
from contracts.inference import Predict, Prediction
from contracts.registry import Lineage, RegisterVersion, SetReference, Task, VersionInfo

__all__ = [
    "ConvenientFeatures",
    "ConvenientInference",
    "ConvenientRegistry",
    "as_tensor",
    "prepare_predict",
    "with_conveniences",
]


def as_tensor(value: Any) -> Tensor:
    """``value`` as a tensor: see the module's docstring for what is accepted."""
    if isinstance(value, Tensor):
        return value
    return Tensor.from_numpy(_as_array(value))


def _as_array(value: Any) -> np.ndarray[Any, Any]:
    if isinstance(value, np.ndarray):
        return value
    if _is_pandas(value):
        return np.asarray(value.to_numpy())
    if isinstance(value, Mapping):
        columns = [np.asarray(_as_array(column)) for column in value.values()]
        if not columns:
            raise ValueError("a dict of columns needs at least one column")
        return np.column_stack(columns)
    return np.asarray(value)


def _is_pandas(value: Any) -> bool:
    return type(value).__module__.split(".")[0] == "pandas" and hasattr(value, "to_numpy")


def prepare_predict(request: Predict) -> Predict:
    """``request`` with every input a tensor; ``coerce=True`` when any input was converted."""
    if not isinstance(request.inputs, (dict, Mapping)):  # dict first: no ABC check
        raise InvalidInput(
            f"Predict.inputs maps each input name to its data, e.g. inputs={{'x': data}};"
            f" got a {type(request.inputs).__name__}"
        )
    if all(isinstance(v, Tensor) for v in request.inputs.values()):
        return request
    inputs = {name: as_tensor(value) for name, value in request.inputs.items()}
    return msgspec.structs.replace(request, inputs=inputs, coerce=True)


class _Wrapper:
    """A contract's client that answers what it does not add itself from the client it wraps."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.protocol = client.protocol

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def __repr__(self) -> str:
        return repr(self._client)


class ConvenientInference(_Wrapper):
    """The inference contract, with :meth:`predict` taking plain Python inputs."""

    async def predict(self, request: Predict) -> Prediction:
        """Run a model; inputs may be tensors, arrays, lists or DataFrames (module docstring)."""
        result: Prediction = await self._client.predict(prepare_predict(request))
        return result


class ConvenientRegistry(_Wrapper):
    """The registry contract, plus registering models trained with scikit-learn, XGBoost or
    LightGBM (converted to ONNX in this process) and :meth:`set_reference` taking plain data."""

    conveniences = ("register_sklearn", "register_xgboost", "register_lightgbm")
    """Methods beyond the contract's (``connect_sync`` offers them blocking too)."""

    async def set_reference(self, request: SetReference) -> VersionInfo:
        """Give a version a reference profile; ``columns`` may be a DataFrame, or map names to
        tensors, arrays, lists or Series."""
        result: VersionInfo = await self._client.set_reference(_reference_request(request))
        return result

    async def register_sklearn(
        self,
        estimator: Any,
        *,
        sample: Any,
        name: str,
        classes: list[str] | None = None,
        **fields: Any,
    ) -> VersionInfo:
        """Convert a fitted scikit-learn estimator or pipeline (numeric inputs) with skl2onnx,
        register it and give it a reference profile from ``sample`` (rows of its inputs).

        ``classes`` names the classes when ``estimator.classes_`` holds codes; ``fields`` go to
        :class:`~contracts.registry.RegisterVersion` (``description``, ``tags``, ``metrics``,
        ``params``, ``lineage``). Answers the registered version.
        """
        fields |= {"sample": sample, "name": name, "classes": classes}
        return await self._register(estimator, _to_onnx_sklearn, **fields)

    async def register_xgboost(self, model: Any, **fields: Any) -> VersionInfo:
        """:meth:`register_sklearn` (the same keyword arguments) for an XGBoost scikit-learn
        model (``XGBClassifier``, ``XGBRegressor``), converted with onnxmltools."""
        return await self._register(model, _to_onnx_xgboost, **fields)

    async def register_lightgbm(self, model: Any, **fields: Any) -> VersionInfo:
        """:meth:`register_sklearn` (the same keyword arguments) for a LightGBM scikit-learn
        model (``LGBMClassifier``, ``LGBMRegressor``), converted with onnxmltools."""
        return await self._register(model, _to_onnx_lightgbm, **fields)

    async def _register(
        self,
        estimator: Any,
        convert: Callable[[Any, int], tuple[bytes, str]],
        *,
        sample: Any,
        name: str,
        classes: list[str] | None = None,
        **fields: Any,
    ) -> VersionInfo:
        columns, x = _sample(sample)
        artifact, converter = convert(estimator, x.shape[1])
        known = getattr(estimator, "classes_", None)
        task: Task = "classification" if known is not None else "regression"
        named = classes if classes is not None else ([] if known is None else known)
        labels = [str(c) for c in named]  # numpy's str_ and int64 labels as plain text
        lineage = fields.pop("lineage", None) or Lineage()
        lineage = msgspec.structs.replace(
            lineage, extra={**lineage.extra, "columns": json.dumps(columns)}
        )
        params = {"converter": converter, "estimator": type(estimator).__name__}
        registered: VersionInfo = await self._client.register_version(
            RegisterVersion(
                name=name,
                artifact=artifact,
                task=task,
                classes=labels if task == "classification" else [],
                lineage=lineage,
                params={**params, **fields.pop("params", {})},
                **fields,
            )
        )
        reference = SetReference(
            name=registered.name,
            version=registered.version,
            columns={c: Tensor.from_numpy(x[:, i]) for i, c in enumerate(columns)},
        )
        result: VersionInfo = await self._client.set_reference(reference)
        return result


def _to_onnx_sklearn(estimator: Any, width: int) -> tuple[bytes, str]:
    skl2onnx = _optional("skl2onnx")
    types = _optional("skl2onnx.common.data_types")
    initial = [("X", types.FloatTensorType([None, width]))]
    model = skl2onnx.convert_sklearn(estimator, initial_types=initial)
    return model.SerializeToString(), f"skl2onnx {skl2onnx.__version__}"


def _to_onnx_xgboost(estimator: Any, width: int) -> tuple[bytes, str]:
    onnxmltools = _optional("onnxmltools")
    types = _optional("onnxmltools.convert.common.data_types")
    unnamed = copy.deepcopy(estimator)
    unnamed.get_booster().feature_names = None  # the converter knows only f0, f1, ...
    initial = [("X", types.FloatTensorType([None, width]))]
    model = onnxmltools.convert_xgboost(unnamed, initial_types=initial)
    return model.SerializeToString(), f"onnxmltools {onnxmltools.__version__}"


def _to_onnx_lightgbm(estimator: Any, width: int) -> tuple[bytes, str]:
    onnxmltools = _optional("onnxmltools")
    types = _optional("onnxmltools.convert.common.data_types")
    initial = [("X", types.FloatTensorType([None, width]))]
    model = onnxmltools.convert_lightgbm(estimator, initial_types=initial)
    return model.SerializeToString(), f"onnxmltools {onnxmltools.__version__}"


def _sample(sample: Any) -> tuple[list[str], np.ndarray[Any, Any]]:
    """The sample's column names (``x_0``... for an array) and its rows as float32."""
    columns = [str(c) for c in sample.columns] if _is_pandas(sample) else None
    try:
        x = np.asarray(_as_array(sample), dtype=np.float32)
    except (TypeError, ValueError):
        raise InvalidInput(
            "the sample must hold numbers only (encode text columns before converting)"
        ) from None
    if x.ndim != 2 or not x.shape[0]:
        raise InvalidInput(f"the sample must be rows of columns, got shape {list(x.shape)}")
    return columns or [f"X_{i}" for i in range(x.shape[1])], x


def _reference_request(request: SetReference) -> SetReference:
    columns: Any = request.columns
    if _is_pandas(columns):
        columns = {str(c): columns[c] for c in columns.columns}
    if all(isinstance(v, Tensor) for v in columns.values()) and columns is request.columns:
        return request
    return msgspec.structs.replace(
        request, columns={str(k): as_tensor(v) for k, v in columns.items()}
    )


def _optional(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        package = module.partition(".")[0]
        raise InvalidInput(
            f"converting this model needs {package}: pip install 'quarryml[convert]'"
        ) from None


class ConvenientFeatures(_Wrapper):
    """The features contract, plus historical retrievals as a pandas ``DataFrame`` or a pyarrow
    ``Table``."""

    conveniences = ("historical_frame", "historical_table")
    """Methods beyond the contract's (``connect_sync`` offers them blocking too)."""

    async def historical_table(self, request: GetHistoricalFeatures) -> Any:
        """The retrieval as a pyarrow ``Table`` (``event_timestamp`` as UTC times); with an
        ``output``, the file the server wrote, read back."""
        _optional_arrow()
        if request.output is not None:
            answer = await self._client.get_historical(request)
            return await asyncio.to_thread(_read_output, str(answer.output))
        rows: list[dict[str, Value]] = []
        async for chunk in self._client.stream_historical(request):
            rows.extend(chunk.rows)
        return await asyncio.to_thread(_rows_table, rows)

    async def historical_frame(self, request: GetHistoricalFeatures) -> Any:
        """The retrieval as a pandas ``DataFrame``: :meth:`historical_table`, converted."""
        if importlib.util.find_spec("pandas") is None:
            raise ImportError(
                "historical_frame needs pandas: pip install pandas (or use historical_table)"
            )
        return (await self.historical_table(request)).to_pandas()


def _optional_arrow() -> Any:
    try:
        return importlib.import_module("pyarrow")
    except ImportError:
        raise ImportError(
            "historical tables need pyarrow: pip install 'quarryml[sources]'"
        ) from None


def _rows_table(rows: list[dict[str, Value]]) -> Any:
    import pyarrow as pa

    table = pa.Table.from_pylist(rows)
    if EVENT_TIMESTAMP not in table.column_names:
        return table
    times = [_moment(v) for v in table.column(EVENT_TIMESTAMP).to_pylist()]
    index = table.column_names.index(EVENT_TIMESTAMP)
    column = pa.array(times, pa.timestamp("us", tz="UTC"))
    return table.set_column(index, EVENT_TIMESTAMP, column)


def _moment(value: Any) -> datetime | None:
    if isinstance(value, str):
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    return None


def _read_output(where: str) -> Any:
    import pyarrow.parquet as pq

    if not where.startswith("s3://"):
        return pq.read_table(where)
    return pq.read_table(where.removeprefix("s3://"), filesystem=arrow_filesystem())


def with_conveniences(clients: Mapping[str, Any]) -> dict[str, Any]:
    """``clients`` with the inference, registry and features clients wrapped by
    :class:`ConvenientInference`, :class:`ConvenientRegistry` and :class:`ConvenientFeatures`."""
    wrapped = dict(clients)
    if "features" in wrapped:
        wrapped["features"] = ConvenientFeatures(wrapped["features"])
    if "inference" in wrapped:
        wrapped["inference"] = ConvenientInference(wrapped["inference"])
    if "registry" in wrapped:
        wrapped["registry"] = ConvenientRegistry(wrapped["registry"])
    return wrapped
