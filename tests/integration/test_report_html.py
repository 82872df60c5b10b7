"""The drift report page: self-contained HTML with one SVG chart per column, the prediction and
two time series, rendered by headless Chromium (required when ``CI=true``)."""

from __future__ import annotations

import re
import struct
import subprocess
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from app.modules.monitoring.drift import dataset_drift, prediction_drift
from app.modules.monitoring.report_html import render
from contracts.monitoring import DriftReport
from tests.fakes.browser import chromium

COLUMNS = ["age", "income", "<script>alert(1)</script>", "segment"]
KINDS = ["numerical", "numerical", "numerical", "categorical"]
START = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
WIDTH, HEIGHT = 1200, 2400
# The chart colours (reference, current, latency line, error-rate line) as RGB.
CHART_RGB = [(0x4C, 0x78, 0xA8), (0xF5, 0x85, 0x18), (0x54, 0xA2, 0x4B), (0xE4, 0x57, 0x56)]


def _segments(rng: np.random.Generator, size: int) -> np.ndarray:
    counts = [size // 2, size * 3 // 10, size - size // 2 - size * 3 // 10]
    return rng.permutation(np.repeat([0.0, 1.0, 2.0], counts))


def _data() -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray]]:
    rng = np.random.default_rng(3)
    reference = np.column_stack(
        [
            rng.normal(40, 10, 600),
            rng.lognormal(10, 0.5, 600),
            rng.normal(0, 1, 600),
            _segments(rng, 600),
        ]
    )
    current = np.column_stack(
        [
            rng.normal(50, 10, 400),  # shifted by one std
            rng.lognormal(10, 0.5, 400),
            rng.normal(0, 1, 400),
            _segments(rng, 400),  # exactly the reference's mix
        ]
    )
    ref_out = {"probabilities": rng.dirichlet([3.0, 1.0], 600)}
    cur_out = {"probabilities": rng.dirichlet([1.0, 3.0], 400)}
    return reference, current, ref_out, cur_out


def _report(with_prediction: bool = True) -> DriftReport:
    reference, current, ref_out, cur_out = _data()
    features, share, drift = dataset_drift(
        reference, current, COLUMNS, KINDS, psi=True, share_threshold=0.25
    )
    return DriftReport(
        id="r-1",
        model="churn <beta>",
        version=3,
        created_at=START,
        window_s=3600.0,
        status="drift" if drift else "ok",
        dataset_drift=drift,
        share_drifted=share,
        share_threshold=0.25,
        features=features,
        prediction=prediction_drift(ref_out, cur_out) if with_prediction else None,
        reference_rows=len(reference),
        current_rows=len(current),
    )


def _series(values: list[float | None]) -> list[tuple[datetime, float | None]]:
    return [(START + timedelta(minutes=5 * i), v) for i, v in enumerate(values)]


def _page(with_prediction: bool = True, **kwargs: object) -> str:
    reference, current, ref_out, cur_out = _data()
    arguments: dict[str, object] = {
        "reference": reference,
        "current": current,
        "reference_predictions": ref_out,
        "current_predictions": cur_out,
        "columns": COLUMNS,
        "latency": _series([12.0, 14.5, None, 13.0, 30.2, 18.0, 16.1]),
        "error_rate": _series([0.0, 0.01, 0.02, None, None, 0.05, 0.01]),
    }
    arguments.update(kwargs)
    return render(_report(with_prediction), **arguments)  # type: ignore[arg-type]


def test_one_chart_per_column_prediction_and_time_series() -> None:
    page = _page()

    charts = re.findall(r'<svg class="chart" role="img" aria-label="([^"]*)"', page)

    assert len(charts) == len(COLUMNS) + 1 + 2
    assert "p99 latency (ms)" in charts
    assert "Error rate" in charts
    assert len(re.findall(r"<svg\b", page)) == len(charts)


def test_without_prediction_there_is_no_prediction_chart() -> None:
    page = _page(with_prediction=False)

    assert page.count('<svg class="chart"') == len(COLUMNS) + 2


def test_text_is_escaped_and_nothing_is_fetched() -> None:
    page = _page()

    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "churn &lt;beta&gt;" in page
    assert "http://" not in page
    assert "https://" not in page
    assert not re.search(r"<(link|img|iframe|object)\b|\bsrc=|@import|url\(", page)


def test_shifted_column_is_reported_as_drift() -> None:
    report = _report()

    assert [f.name for f in report.features if f.drifted] == ["age"]
    assert report.dataset_drift
    page = _page()
    assert "badge drift" in page


def test_prediction_chart_compares_the_predicted_classes() -> None:
    page = _page()

    assert 'aria-label="prediction: reference vs current"' in page


def test_empty_series_and_missing_samples_say_so() -> None:
    page = _page(
        reference=None,
        current=None,
        reference_predictions=None,
        current_predictions=None,
        latency=[],
        error_rate=_series([None, None]),
    )

    assert page.count("no sample data") == len(COLUMNS)
    assert 'aria-label="prediction: statistic vs threshold"' in page
    assert page.count(">no data<") == 2
    assert page.count('<svg class="chart"') == len(COLUMNS) + 1 + 2


def test_same_input_renders_the_same_page() -> None:
    assert _page() == _page()


def _png(path: Path) -> tuple[int, int, bytes]:
    """Width, height and the raw (filtered) scanlines of a PNG."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, colour_type = struct.unpack(">IIBB", header[:10])
    assert (depth, colour_type) in ((8, 2), (8, 6))  # 8-bit RGB or RGBA
    return width, height, zlib.decompress(idat)


def _pixels(width: int, height: int, raw: bytes) -> np.ndarray:
    """Undo the PNG row filters: an ``[height, width, channels]`` uint8 array."""
    stride = len(raw) // height - 1
    bpp = stride // width
    previous = np.zeros(stride, dtype=np.uint8)
    rows = []
    for y in range(height):
        start = y * (stride + 1)
        kind = raw[start]
        line = np.frombuffer(raw, dtype=np.uint8, count=stride, offset=start + 1)
        if kind == 0:
            row = line.copy()
        elif kind == 1:  # Sub: a running sum per channel (uint8 wraps like the filter)
            row = np.cumsum(line.reshape(-1, bpp), axis=0, dtype=np.uint8).ravel()
        elif kind == 2:  # Up
            row = line + previous
        else:
            row = _average_or_paeth(kind, bytes(line), bytes(previous), bpp)
        rows.append(row)
        previous = row
    return np.stack(rows).reshape(height, width, bpp)


def _average_or_paeth(kind: int, line: bytes, previous: bytes, bpp: int) -> np.ndarray:
    out = bytearray(len(line))
    for i, value in enumerate(line):
        a = out[i - bpp] if i >= bpp else 0
        b = previous[i]
        if kind == 3:
            out[i] = (value + (a + b) // 2) & 0xFF
            continue
        c = previous[i - bpp] if i >= bpp else 0
        p = a + b - c
        pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
        out[i] = (value + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
    return np.frombuffer(bytes(out), dtype=np.uint8)


def _has_colour(colours: np.ndarray, rgb: tuple[int, int, int], tolerance: int = 6) -> bool:
    distance = np.abs(colours.astype(np.int16) - np.array(rgb, dtype=np.int16)).max(axis=1)
    return bool((distance <= tolerance).any())


def test_chromium_renders_the_charts(tmp_path: Path) -> None:
    binary = chromium()
    page = tmp_path / "report.html"
    page.write_text(_page(), encoding="utf-8")
    shot = tmp_path / "report.png"

    subprocess.run(
        [
            binary,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--screenshot={shot}",
            f"--window-size={WIDTH},{HEIGHT}",
            page.as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )

    width, height, raw = _png(shot)
    assert (width, height) == (WIDTH, HEIGHT)
    colours = np.unique(_pixels(width, height, raw)[:, :, :3].reshape(-1, 3), axis=0)
    assert len(colours) > 50, "the screenshot is (nearly) blank"
    for rgb in CHART_RGB:
        assert _has_colour(colours, rgb), f"chart colour {rgb} is not in the screenshot"
