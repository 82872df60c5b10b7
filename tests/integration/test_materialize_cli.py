"""`quarry materialize VIEW`: queues the run, follows it to the end, says how it went."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

import app
from app.cli import main
from app.cli.materialize import progress_line
from contracts.features import Feature, FeatureSource, Materialization, PutFeatureView

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _rows(count: int) -> list[dict[str, object]]:
    return [
        {"user_id": i % 10, "event_timestamp": T0 + timedelta(minutes=i), "clicks": i}
        for i in range(count)
    ]


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for variable in ("QUARRY_URL", "QUARRY_API_KEY"):
        monkeypatch.delenv(variable, raising=False)
    root = tmp_path / "q"
    root.mkdir()
    pq.write_table(pa.Table.from_pylist(_rows(50)), root / "clicks.parquet")
    bad = [{**row, "event_timestamp": "soon"} for row in _rows(3)]
    pacsv.write_csv(pa.Table.from_pylist(bad), root / "bad.csv")
    with app.connect_sync(data_dir=root, modules="features") as q:
        for name, source in (
            ("clicks", FeatureSource(format="parquet", path="clicks.parquet")),
            ("bad", FeatureSource(format="csv", path="bad.csv")),
        ):
            q.features.put_view(
                PutFeatureView(
                    name=name,
                    entities=["user_id"],
                    features=[Feature(name="clicks", dtype="int")],
                    source=source,
                )
            )
    return root


def test_materialize_follows_the_run_to_its_end(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["materialize", "clicks", "--data-dir", str(data_dir), "--chunk-rows", "20"])
    out = capsys.readouterr().out

    assert status == 0
    assert "100.0%" in out
    assert "50/50 rows" in out
    assert out.rstrip().endswith("succeeded")

    status = main(["materialize", "clicks", "--data-dir", str(data_dir), "--json"])
    again = json.loads(capsys.readouterr().out)
    assert (status, again["status"], again["rows_done"], again["rows_written"]) == (
        0,
        "succeeded",
        50,
        0,
    )


def test_a_failed_run_exits_1_with_its_reason(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["materialize", "bad", "--data-dir", str(data_dir)])
    err = capsys.readouterr().err

    assert status == 1
    assert "bad.csv, rows 0-2, column 'event_timestamp'" in err


def test_the_progress_line_shows_what_is_known() -> None:
    queued = Materialization(id="r", view="users", status="queued")
    running = Materialization(
        id="r",
        view="users",
        status="running",
        rows_total=4000,
        rows_done=1000,
        percent=25.0,
        rows_per_s=2500.0,
    )

    assert progress_line(queued) == f"users [{'.' * 30}]  0 rows  queued"
    assert progress_line(running) == (
        f"users [{'#' * 8}{'.' * 22}]   25.0%  1,000/4,000 rows  2,500 rows/s  running"
    )
