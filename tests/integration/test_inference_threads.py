"""How many intra-op threads a served model's session gets."""

from __future__ import annotations

import hashlib
import math

import pytest

from app.modules.inference import runtime
from app.modules.inference.runtime import CPU, LoadedModel, load_model
from app.modules.registry.signature import read_signature
from tests.fakes.models import linear_onnx


def load(data: bytes, threads: int) -> LoadedModel:
    return load_model(
        "m",
        1,
        data,
        read_signature(data),
        providers=[CPU],
        intra_op_threads=threads,
        sha256=hashlib.sha256(data).hexdigest(),
    )


def threads_of(model: LoadedModel) -> int:
    return int(model.session.get_session_options().intra_op_num_threads)


def test_a_model_measured_tiny_runs_on_one_intra_op_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(runtime, "TINY_RUN_S", math.inf)
    model = load(linear_onnx(), 0)
    assert threads_of(model) == 1
    assert model.warm_up(2) is True


def test_a_model_not_measured_tiny_keeps_one_thread_per_core(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(runtime, "TINY_RUN_S", 0.0)
    assert threads_of(load(linear_onnx(), 0)) == 0


def test_a_thread_count_that_is_set_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "TINY_RUN_S", math.inf)
    assert threads_of(load(linear_onnx(), 2)) == 2
