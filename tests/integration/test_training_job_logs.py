"""A training job's log lines: its run's steps, every epoch and what its training process
printed, each line cut to its bound, the latest lines kept; read in process, over a msgpack
round trip and over HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from app.bootstrap import Platform
from app.kernel import calls
from app.kernel.codec import loopback
from app.kernel.db import Database
from app.kernel.settings import Settings
from app.modules.training import store
from app.modules.training.joblog import JobLog, cut
from app.modules.training.runner import _gate_line
from app.modules.training.settings import TrainingSettings
from contracts.common import NotFound
from contracts.training import (
    MAX_LOG_LINE,
    MAX_LOG_LINES,
    Dataset,
    GateVerdict,
    GetJobLogs,
    SubmitTrainingJob,
    TrainingJobSpec,
    TrainingService,
)
from tests.fakes.talkative_trainer import LONG
from tests.integration.test_training_jobs import finished

pytest.importorskip("torch")

NOW = 1_000_000.0


@pytest.fixture
async def platform(tmp_path: Path) -> AsyncIterator[Platform]:
    settings = Settings(data_dir=tmp_path, modules=("registry", "training")).with_module(
        TrainingSettings(trainers=("tests.fakes.talkative_trainer",))
    )
    async with Platform(settings) as started:
        yield started


async def test_a_jobs_log_has_its_steps_epochs_and_printed_lines(platform: Platform) -> None:
    training: TrainingService = platform.client("training", caller="tests")
    rows = [{"a": float(i), "y": 2.0 * i} for i in range(20)]
    spec = TrainingJobSpec(
        trainer="talkative", model="chatty", dataset=Dataset(rows=rows, features=["a"], label="y")
    )
    job = await training.submit_job(SubmitTrainingJob(spec=spec))
    done = await finished(SimpleNamespace(training=training), job.id)
    assert done.status == "succeeded", done.error

    wire = loopback(TrainingService, platform.client("training"))
    remote = calls.bind(TrainingService, wire, module="training", caller="tests")
    for client in (training, remote):
        logs = await client.get_job_logs(GetJobLogs(id=job.id))
        lines = [entry.line for entry in logs.lines]
        assert logs.dropped == 0
        assert lines[0] == "attempt 1 of 3 started"
        assert any(line.startswith("dataset: 20 rows") for line in lines)
        epochs = [line for line in lines if line.startswith("epoch ")]
        assert [line.split(":")[0] for line in epochs] == [f"epoch {e} of 3" for e in (1, 2, 3)]
        assert all("train_loss=" in line for line in epochs)
        assert "talkative: fitting 16 rows for 3 epochs" in lines
        long = next(line for line in lines if line.startswith("xxx"))
        assert LONG > len(long) == MAX_LOG_LINE
        assert long.endswith("…")
        assert "carriage return  bell" in lines  # control characters become spaces
        assert "registered chatty:1" in lines
        assert lines[-1] == "succeeded"
        assert all(entry.attempt == 1 for entry in logs.lines)
        assert [e.at for e in logs.lines] == sorted(e.at for e in logs.lines)

    newest = await training.get_job_logs(GetJobLogs(id=job.id, limit=2))
    assert [e.line for e in newest.lines][-1] == "succeeded"
    assert newest.dropped == len(logs.lines) - 2


async def test_an_unknown_jobs_log_is_not_found(platform: Platform) -> None:
    training: TrainingService = platform.client("training", caller="tests")
    with pytest.raises(NotFound):
        await training.get_job_logs(GetJobLogs(id="no-such-job"))


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database("training", database_url)
    database.migrate("training")
    spec = TrainingJobSpec(trainer="t", model="m", dataset=Dataset(rows=[], label="y"))
    database.write_sync(lambda c: store.insert(c, "j1", spec, NOW))
    database.write_sync(lambda c: store.claim(c, "j1", "run-a", NOW, NOW - 60))
    yield database
    database.dispose()


def test_a_job_keeps_its_latest_lines_and_counts_the_rest(db: Database) -> None:
    first = [(NOW + i, f"line {i}") for i in range(MAX_LOG_LINES - 10)]
    assert db.write_sync(lambda c: store.append_logs(c, "j1", "run-a", 1, first))
    more = [(NOW + 5000 + i, f"more {i}") for i in range(30)]
    assert db.write_sync(lambda c: store.append_logs(c, "j1", "run-a", 1, more))

    found = db.read_sync(lambda c: store.job_logs(c, "j1", MAX_LOG_LINES))
    assert found is not None
    lines, dropped = found
    assert len(lines) == MAX_LOG_LINES
    assert dropped == 20
    assert lines[0].line == "line 20"
    assert lines[-1].line == "more 29"
    assert db.read_sync(lambda c: store.job_logs(c, "nope", 10)) is None


def test_a_run_that_lost_the_job_writes_no_line(db: Database) -> None:
    lines = [(NOW, "from a run that lost the job")]
    assert not db.write_sync(lambda c: store.append_logs(c, "j1", "run-b", 1, lines))
    found = db.read_sync(lambda c: store.job_logs(c, "j1", 10))
    assert found == ([], 0)


def test_a_line_is_one_printable_line_within_the_bound() -> None:
    assert cut("a\tb\r\nc\x1b[0m\x7f") == "a\tb  c [0m"
    assert len(cut("y" * (MAX_LOG_LINE + 1))) == MAX_LOG_LINE
    log = JobLog()
    for i in range(MAX_LOG_LINES + 5):
        log.add(f"{i}")
    log.add("   ")  # nothing left to keep
    taken = log.take()
    assert len(taken) == MAX_LOG_LINES
    assert taken[0][1] == "5"
    assert not log


def test_the_gates_line_names_the_metric_and_the_baseline() -> None:
    passed = GateVerdict(
        passed=True, metric="accuracy", value=0.8075, baseline_version=1, baseline_value=0.715
    )
    assert _gate_line(passed) == "gate passed: accuracy 0.8075 against version 1 (0.715)"
    failed = GateVerdict(passed=False, metric="rmse", value=2.5, reasons=["rmse above 1"])
    assert _gate_line(failed) == "gate failed: rmse 2.5; rmse above 1"
