"""Smoke client: wait for readiness, register an ONNX model built without torch, read it back,
predict, list trainers, push and read features, read a monitoring summary."""

import hashlib
import json
import sys
import time
import urllib.error
import urllib.request
import uuid

import onnx
from onnx import TensorProto, helper

base = sys.argv[1]


def call(method, path, body=None, headers=None):
    request = urllib.request.Request(base + path, data=body, method=method, headers=headers or {})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, response.read()


deadline = time.monotonic() + 60
while True:
    try:
        if call("GET", "/readyz")[0] == 200:
            break
    except (urllib.error.URLError, ConnectionError):
        pass
    if time.monotonic() > deadline:
        sys.exit("server did not become ready within 60 s")
    time.sleep(0.2)

graph = helper.make_graph(
    [helper.make_node("Relu", ["x"], ["y"])],
    "smoke",
    [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
    [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
data = model.SerializeToString()
boundary = uuid.uuid4().hex
body = (
    (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="m.onnx"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    + data
    + f"\r\n--{boundary}--\r\n".encode()
)
status, raw = call(
    "POST",
    "/v1/registry/models/smoke/versions",
    body,
    {"Content-Type": f"multipart/form-data; boundary={boundary}"},
)
answer = json.loads(raw)
assert status == 201, (status, answer)
assert answer["version"] == 1 and answer["sha256"] == hashlib.sha256(data).hexdigest(), answer
assert answer["signature"]["inputs"][0]["shape"] == [-1, 4], answer
status, artifact = call("GET", "/v1/registry/models/smoke/versions/1/artifact")
assert artifact == data
status, raw = call(
    "POST",
    "/v1/predict/smoke",
    json.dumps({"inputs": {"x": [[-1.0, 2.0, -3.0, 4.0]]}}).encode(),
    {"Content-Type": "application/json"},
)
prediction = json.loads(raw)
assert status == 200, prediction
assert prediction["outputs"]["y"] == [[0.0, 2.0, 0.0, 4.0]], prediction
status, raw = call("GET", "/v2/models/smoke")
assert json.loads(raw)["platform"] == "onnxruntime_onnx"
for path in ("/healthz", "/schema/openapi.json", "/v1/modules", "/metrics"):
    assert call("GET", path)[0] == 200, path
assert b"quarry_contract_call_duration_seconds" in call("GET", "/metrics")[1]
JSON = {"Content-Type": "application/json"}
status, raw = call("GET", "/v1/training/trainers")
trainers = {t["name"] for t in json.loads(raw)["items"]}
assert {"logistic_regression", "mlp_classifier", "mlp_regressor"} <= trainers, trainers
view = {"entities": ["user_id"], "features": [{"name": "age", "dtype": "float"}]}
assert call("PUT", "/v1/features/views/users", json.dumps(view).encode(), JSON)[0] == 200
rows = {"rows": [{"user_id": 1, "age": 30.0, "event_timestamp": "2026-01-01T00:00:00Z"}]}
assert call("POST", "/v1/features/views/users/rows", json.dumps(rows).encode(), JSON)[0] == 200
ask = {"features": ["users:age"], "entities": {"user_id": [1]}}
status, raw = call("POST", "/v1/features/online", json.dumps(ask).encode(), JSON)
assert json.loads(raw)["results"][1]["values"] == [30.0], raw
status, raw = call("GET", "/v1/monitoring/models/smoke/summary?window=5m")
assert status == 200, raw
print("registered smoke:1", answer["sha256"])
assert "torch" not in sys.modules and onnx is not None
