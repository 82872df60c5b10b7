"""``quarry example-model PATH`` writes a small ONNX model that ONNX Runtime serves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from app.cli.commands import main


def test_example_model_is_a_logistic_regression_over_x(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ort = pytest.importorskip("onnxruntime")
    path = tmp_path / "model.onnx"

    status = main(["--data-dir", str(tmp_path / "data"), "example-model", str(path)])

    assert status == 0
    assert capsys.readouterr().out == (
        f"wrote {path}: input x float32 [batch, 3], output score float32 [batch, 1]\n"
    )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.array([[0.1, 0.2, 0.3], [0.0, 0.0, 0.0]], dtype=np.float32)
    (score,) = session.run(["score"], {"x": x})
    assert score.shape == (2, 1)
    assert score[1, 0] == pytest.approx(0.5)  # no bias: a zero input is even odds
    assert 0.5 < score[0, 0] < 1.0  # the weights rise over the features


def test_example_model_width_follows_features_and_is_reproducible(tmp_path: Path) -> None:
    first, second = tmp_path / "a.onnx", tmp_path / "b.onnx"
    for path in (first, second):
        assert (
            main(["--data-dir", str(tmp_path), "example-model", str(path), "--features", "8"]) == 0
        )

    assert first.read_bytes() == second.read_bytes()


def test_example_model_refuses_no_features(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["--data-dir", str(tmp_path), "example-model", "m.onnx", "--features", "0"])

    assert status == 2
    assert "--features must be at least 1" in capsys.readouterr().err
