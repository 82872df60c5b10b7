"""Hand-written FastAPI prediction servers ``bench.predict_http`` compares Quarry with; each loads
the ONNX file named by ``BENCH_MODEL`` and is served by ``uvicorn``."""
