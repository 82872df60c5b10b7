"""The FastAPI baseline with a sync ``def`` endpoint (run in FastAPI's thread pool)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import onnxruntime as ort
from fastapi import FastAPI
from pydantic import BaseModel

session = ort.InferenceSession(os.environ["BENCH_MODEL"], providers=["CPUExecutionProvider"])
outputs = [o.name for o in session.get_outputs()]
app = FastAPI()


class Body(BaseModel):
    inputs: dict[str, list[list[float]]]


@app.post("/predict")
def predict(body: Body) -> dict[str, Any]:
    feeds = {k: np.asarray(v, dtype=np.float32) for k, v in body.inputs.items()}
    results = session.run(outputs, feeds)
    return {"outputs": {k: r.tolist() for k, r in zip(outputs, results, strict=True)}}
