"""The inference module's own settings: ``QUARRY_INFERENCE_*``, or ``[inference]`` in
``quarry.toml``. The older names (``QUARRY_MAX_BATCH_SIZE``, ``QUARRY_PREDICTION_LOG_SAMPLE``,
...) still work.

The artifact store (``QUARRY_ARTIFACTS_URL``) and the tensor size bound
(``QUARRY_MAX_TENSOR_BYTES``) are kernel settings, shared with the registry.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from app.kernel.module_settings import Alias

__all__ = ["InferenceSettings"]

_Positive = msgspec.Meta(ge=1)
_PositiveOrZero = msgspec.Meta(ge=0)


class InferenceSettings(msgspec.Struct, frozen=True, kw_only=True):
    """How models are run, batched, queued, kept loaded and cached, and how many predictions are
    logged for monitoring."""

    providers: str = "auto"
    """QUARRY_INFERENCE_PROVIDERS: ``auto`` (CUDA when it really loads, else CPU) or a list."""
    threads: Annotated[int, _PositiveOrZero] = 0
    """QUARRY_INFERENCE_THREADS: ONNX Runtime intra-op threads per session (0 = one per core)."""
    runners: Annotated[int, _Positive] = 1
    """QUARRY_INFERENCE_RUNNERS: batches of one model version run at the same time."""
    inline_max_us: Annotated[int, msgspec.Meta(ge=0, le=10_000)] = 100
    """QUARRY_INFERENCE_INLINE_MAX_US: a run expected to take less than this many microseconds
    runs on the event loop's thread, longer ones on a runner thread (0 = always a runner; at most
    10 ms, so that one run never stalls the loop for long)."""
    max_batch_size: Annotated[int, _Positive, Alias("QUARRY_MAX_BATCH_SIZE")] = 64
    """QUARRY_INFERENCE_MAX_BATCH_SIZE (or QUARRY_MAX_BATCH_SIZE): most rows one ``session.run``
    takes."""
    max_queue_delay_ms: Annotated[float, _PositiveOrZero, Alias("QUARRY_MAX_QUEUE_DELAY_MS")] = 0.0
    """QUARRY_INFERENCE_MAX_QUEUE_DELAY_MS (or QUARRY_MAX_QUEUE_DELAY_MS): how long a batch may
    wait to fill (0 = never wait)."""
    max_queue_rows: Annotated[int, _Positive, Alias("QUARRY_MAX_QUEUE_ROWS")] = 4096
    """QUARRY_INFERENCE_MAX_QUEUE_ROWS (or QUARRY_MAX_QUEUE_ROWS): rows waiting per model version
    before requests get 503."""
    max_loaded_models: Annotated[int, _Positive, Alias("QUARRY_MAX_LOADED_MODELS")] = 16
    """QUARRY_INFERENCE_MAX_LOADED_MODELS (or QUARRY_MAX_LOADED_MODELS): model versions kept
    loaded (least recently used go first)."""
    max_loaded_bytes: Annotated[int, _Positive, Alias("QUARRY_MAX_LOADED_BYTES")] = 4 << 30
    """QUARRY_INFERENCE_MAX_LOADED_BYTES (or QUARRY_MAX_LOADED_BYTES): artifact bytes kept
    loaded."""
    artifact_cache_bytes: Annotated[int, _PositiveOrZero, Alias("QUARRY_ARTIFACT_CACHE_BYTES")] = (
        10 << 30
    )
    """QUARRY_INFERENCE_ARTIFACT_CACHE_BYTES (or QUARRY_ARTIFACT_CACHE_BYTES): artifact bytes an
    inference host keeps on disk (0 = none).

    The copies live in ``<data_dir>/artifact-cache`` (least recently used go first); not kept
    when the registry runs in the same process on a local folder, whose bytes are already here.
    """
    prediction_log_sample: Annotated[
        float, msgspec.Meta(ge=0, le=1), Alias("QUARRY_PREDICTION_LOG_SAMPLE")
    ] = 0.1
    """QUARRY_INFERENCE_PREDICTION_LOG_SAMPLE (or QUARRY_PREDICTION_LOG_SAMPLE): share of
    predictions whose inputs are logged (0..1)."""
    source_roots: Annotated[tuple[str, ...], Alias("QUARRY_SOURCE_ROOTS")] = ()
    """QUARRY_INFERENCE_SOURCE_ROOTS (or QUARRY_SOURCE_ROOTS, which feature views read too):
    comma-separated folders a batch job may read its rows from and write its output to (default:
    the data directory only); a relative path is taken from the first one."""
    source_databases: Annotated[tuple[str, ...], Alias("QUARRY_SOURCE_DATABASES")] = ()
    """QUARRY_INFERENCE_SOURCE_DATABASES (or QUARRY_SOURCE_DATABASES): comma-separated
    ``postgresql://`` URLs a batch job may read, each optionally named ``name=URL``; none by
    default."""
