"""Export a trained torch module to ONNX, and check an export against the model it came from.

The exported graph takes float32 ``[N, k]`` (``features`` by default, any ``N``) and answers
``probabilities`` (softmax of the logits, float32 ``[N, C]``) for classification or
``prediction`` (float32 ``[N]``) for regression. Trainers that export their models themselves
(:class:`~app.modules.training.trainers.OnnxModel`) answer the same outputs, and
:func:`check_native_parity` compares them with the native library's predictions. torch is
imported inside the functions only. These run in a job's training process (see ``child.py``),
never in the serving process.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import warnings
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from contracts.common import InvalidInput

if TYPE_CHECKING:
    import torch

__all__ = [
    "OPSET",
    "ParityError",
    "check_native_parity",
    "check_parity",
    "export_onnx",
    "onnx_session",
    "output_name",
    "run_onnx",
]

OPSET = 18
"""The ONNX opset of exported models."""

_OUTPUTS = {"classification": "probabilities", "regression": "prediction"}


class ParityError(Exception):
    """The ONNX export and the model it came from answer differently on the same rows."""


def output_name(task: str) -> str:
    """The output an exported model of ``task`` answers."""
    if task not in _OUTPUTS:
        raise InvalidInput(f"unknown task {task!r}; expected classification or regression")
    return _OUTPUTS[task]


def export_onnx(
    module: torch.nn.Module, n_features: int, *, task: str, input_name: str = "features"
) -> bytes:
    """The ONNX bytes of ``module`` (a CPU copy in eval mode; ``module`` itself is untouched)
    with a dynamic batch dimension, ``n_features`` inputs and :func:`output_name` as output."""
    import torch

    wrapped = _wrap(module, task)
    example = torch.zeros((2, n_features), dtype=torch.float32)
    with torch.no_grad():
        shape = tuple(wrapped(example).shape)
    classification = task == "classification"
    if (len(shape) != 2) if classification else (shape != (2,)):
        answer = "[N, C] logits" if classification else "[N] or [N, 1] predictions"
        raise InvalidInput(
            f"a {task} module must answer {answer} for [N, {n_features}] inputs;"
            f" it answered {list(shape)} for N=2"
        )
    with _quiet():
        program = torch.onnx.export(
            wrapped,
            (example,),
            dynamo=True,
            input_names=[input_name],
            output_names=[output_name(task)],
            dynamic_shapes=({0: torch.export.Dim("batch")},),
            opset_version=OPSET,
            verbose=False,
        )
    if program is None:  # only the legacy exporter answers None
        raise RuntimeError("the ONNX exporter returned no program")
    return bytes(program.model_proto.SerializeToString())


def check_parity(
    onnx_bytes: bytes | Any,
    module: torch.nn.Module,
    x: np.ndarray,
    *,
    task: str,
    rtol: float = 1e-4,
    atol: float = 1e-5,
    threads: int = 0,
) -> float:
    """Run ``x`` through onnxruntime (the model's bytes on the CPU with ``threads`` intra-op
    threads, 0: one per core; or an :func:`onnx_session`) and through ``module``; the largest
    absolute difference of their outputs. ``ParityError`` when
    they disagree beyond ``rtol``/``atol``."""
    import torch

    name = output_name(task)
    rows = np.ascontiguousarray(x, dtype=np.float32)
    got = run_onnx(onnx_bytes, rows, threads=threads)[name]
    with torch.no_grad():
        expected = _wrap(module, task)(torch.from_numpy(rows)).numpy()
    return _compare(got, expected, name=name, source="torch", rtol=rtol, atol=atol)


def check_native_parity(
    onnx_bytes: bytes | Any,
    predict: Callable[[np.ndarray], np.ndarray],
    x: np.ndarray,
    *,
    task: str,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    threads: int = 0,
) -> float:
    """Run ``x`` through onnxruntime (as :func:`check_parity` does) and through ``predict`` (the
    native library's answer for the task's output: class probabilities ``[N, C]`` or predictions
    ``[N]``); the largest absolute difference. ``ParityError`` when the model lacks the task's
    output or the two disagree beyond ``rtol`` and ``atol`` times the largest expected magnitude
    (at least 1: tree ensembles sum their leaves in float32, so the error grows with the
    values)."""
    name = output_name(task)
    rows = np.ascontiguousarray(x, dtype=np.float32)
    outputs = run_onnx(onnx_bytes, rows, threads=threads)
    if name not in outputs:
        raise ParityError(
            f"the exported {task} model answers {', '.join(sorted(outputs))}; it must answer"
            f" {name!r}"
        )
    expected = np.asarray(predict(rows))
    scale = float(np.max(np.abs(expected), initial=1.0)) if np.isfinite(expected).all() else 1.0
    return _compare(
        outputs[name], expected, name=name, source="the native model", rtol=rtol, atol=atol * scale
    )


def onnx_session(onnx_bytes: bytes, *, threads: int = 0) -> Any:
    """An ONNX Runtime session of the model on the CPU (``threads`` intra-op threads; 0: one per
    core), for :func:`run_onnx` to use more than once: a large model takes long to load."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(
        onnx_bytes, sess_options=options, providers=["CPUExecutionProvider"]
    )


def run_onnx(model: bytes | Any, x: np.ndarray, *, threads: int = 0) -> dict[str, np.ndarray]:
    """Every output of the model (ONNX bytes, or an :func:`onnx_session`) on float32 rows ``x``,
    with ONNX Runtime on the CPU (``threads`` intra-op threads; 0: one per core)."""
    session = onnx_session(model, threads=threads) if isinstance(model, bytes) else model
    feeds = {session.get_inputs()[0].name: np.ascontiguousarray(x, dtype=np.float32)}
    outputs = session.run(None, feeds)
    return {o.name: np.asarray(v) for o, v in zip(session.get_outputs(), outputs, strict=True)}


def _compare(
    got: np.ndarray, expected: np.ndarray, *, name: str, source: str, rtol: float, atol: float
) -> float:
    """The largest absolute difference of ``got`` (ONNX) and ``expected`` (``source``), or
    ``ParityError`` when they differ in shape or beyond the tolerance."""
    if got.shape != expected.shape:
        raise ParityError(
            f"ONNX output {name!r} has shape {list(got.shape)}, {source} {list(expected.shape)}"
        )
    if got.size == 0:
        return 0.0
    diff = float(np.max(np.abs(got.astype(np.float64) - expected.astype(np.float64))))
    if not np.allclose(got, expected, rtol=rtol, atol=atol) or not np.isfinite(diff):
        raise ParityError(
            f"ONNX output {name!r} differs from {source} by up to {diff:.3g} on {len(got)} rows"
            f" (rtol={rtol:g}, atol={atol:.3g})"
        )
    return diff


def _wrap(module: torch.nn.Module, task: str) -> torch.nn.Module:
    """A CPU, eval-mode copy of ``module`` followed by the task's output head."""
    import torch

    name = output_name(task)
    model = copy.deepcopy(module).cpu().eval()
    # Flatten(0) turns [N] or [N, 1] predictions into [N]
    head = torch.nn.Softmax(dim=-1) if name == "probabilities" else torch.nn.Flatten(start_dim=0)
    wrapped = torch.nn.Sequential(model, head)
    wrapped.eval()
    return wrapped


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the exporter: its deprecation warnings (errors under pytest) and log lines."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)
