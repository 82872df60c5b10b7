"""`app.connect()` for people: quiet by default, and predict takes plain Python inputs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import app
from app.client import ConvenientInference
from app.kernel import calls
from app.kernel.codec import loopback
from contracts.common import QuarryError, Tensor
from contracts.inference import InferenceService, Predict
from contracts.registry import RegisterVersion
from tests.fakes.models import linear_onnx, linear_weights

ROWS = [[1.0, 2.0, 3.0], [0.5, -1.0, 4.0]]


def expected() -> np.ndarray:
    weight, bias = linear_weights()
    return np.asarray(ROWS, dtype=np.float32) @ weight + bias


async def test_predict_takes_lists_arrays_and_columns_for_an_fp32_model(tmp_path: Path) -> None:
    async with app.connect(data_dir=tmp_path) as q:
        await q.registry.register_version(RegisterVersion(name="lin", artifact=linear_onnx()))
        answers = [
            await q.inference.predict(Predict(model="lin", inputs={"x": given}))
            for given in (
                ROWS,
                np.asarray(ROWS),  # float64, the numpy default
                {"a": [r[0] for r in ROWS], "b": [r[1] for r in ROWS], "c": [r[2] for r in ROWS]},
            )
        ]

    for answer in answers:
        assert np.allclose(answer.outputs["y"].to_numpy(), expected(), atol=1e-5)


async def test_float64_that_overflows_fp32_is_refused(tmp_path: Path) -> None:
    async with app.connect(data_dir=tmp_path) as q:
        await q.registry.register_version(RegisterVersion(name="lin", artifact=linear_onnx()))
        with pytest.raises(QuarryError) as caught:
            await q.inference.predict(Predict(model="lin", inputs={"x": [[1e300, 0.0, 0.0]]}))
        exact = Tensor.from_numpy(np.asarray(ROWS))  # a Tensor keeps the exact rule
        with pytest.raises(QuarryError):
            await q.inference.predict(Predict(model="lin", inputs={"x": exact}))

    assert "outside the range of FP32" in str(caught.value)


async def test_inputs_are_converted_before_they_leave_the_caller(tmp_path: Path) -> None:
    async with app.connect(data_dir=tmp_path) as q:
        await q.registry.register_version(RegisterVersion(name="lin", artifact=linear_onnx()))
        wire = loopback(InferenceService, q.inference)  # a msgpack round trip, as over RPC
        remote = calls.bind(InferenceService, wire, module="inference", caller="tests")
        answer = await ConvenientInference(remote).predict(Predict(model="lin", inputs={"x": ROWS}))

    assert np.allclose(answer.outputs["y"].to_numpy(), expected(), atol=1e-5)


def test_connect_sync_predicts_from_a_list(tmp_path: Path) -> None:
    with app.connect_sync(data_dir=tmp_path) as q:
        q.registry.register_version(RegisterVersion(name="lin", artifact=linear_onnx()))
        answer = q.inference.predict(Predict(model="lin", inputs={"x": ROWS}))

    assert np.allclose(answer.outputs["y"].to_numpy(), expected(), atol=1e-5)


def test_connect_logs_nothing_below_warning_by_default(tmp_path: Path) -> None:
    script = (
        "import asyncio, sys, app\n"
        "async def main():\n"
        "    async with app.connect(data_dir=sys.argv[1]) as q:\n"
        "        print(q.modules)\n"
        "asyncio.run(main())\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "QUARRY_LOG_LEVEL"}
    for _ in range(2):  # the first start migrates; the second finds the databases current
        done = subprocess.run(
            [sys.executable, "-c", script, str(tmp_path / "q")],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            check=True,
            timeout=120,
        )
        assert "registry" in done.stdout
        assert done.stderr == ""
