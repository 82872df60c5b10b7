"""A job's page draws one curve per metric its trainer reported after each epoch."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from app.console._training import curves
from contracts.training import Dataset, EpochRecord, TrainingJob, TrainingJobSpec

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _job(history: list[EpochRecord]) -> TrainingJob:
    spec = TrainingJobSpec(
        trainer="mlp_classifier", model="churn", dataset=Dataset(label="y", features=["x"])
    )
    return TrainingJob(
        id="j1", spec=spec, status="running", created_at=NOW, updated_at=NOW, history=history
    )


def test_each_metric_gets_a_line_with_one_point_per_epoch_it_was_reported() -> None:
    history = [
        EpochRecord(epoch=1, metrics={"train_loss": 0.9, "valid_loss": 1.0}),
        EpochRecord(epoch=2, metrics={"train_loss": 0.5, "valid_loss": 0.7}),
        EpochRecord(epoch=3, metrics={"train_loss": 0.3}),
    ]

    drawn = curves(_job(history))

    assert sorted(drawn) == ["train_loss", "valid_loss"]
    points = {
        name: re.search(r'points="([^"]+)"', str(svg)).group(1).split()  # type: ignore[union-attr]
        for name, svg in drawn.items()
    }
    assert len(points["train_loss"]) == 3
    assert len(points["valid_loss"]) == 2
    assert 'aria-label="train_loss per epoch"' in str(drawn["train_loss"])


def test_a_job_without_epochs_has_no_curves() -> None:
    assert curves(_job([])) == {}
