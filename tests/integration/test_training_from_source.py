"""A training job whose entity rows come from a Parquet file, as a view's source is read."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from app.bootstrap import Platform
from app.kernel.settings import Settings
from contracts.common import InvalidInput
from contracts.features import FeatureSource
from contracts.training import Dataset, SubmitTrainingJob, TrainingJobSpec
from tests.integration.test_training_jobs import USERS, Connected, finished, seed_features

pytest.importorskip("torch")


async def test_a_job_reads_its_entity_rows_from_a_source(tmp_path: Path) -> None:
    async with Platform(Settings(data_dir=tmp_path)) as platform:
        q: Any = Connected(platform)
        await seed_features(q)
        now = datetime.now(UTC)
        spine = [{"user_id": i, "event_timestamp": now} for i in range(USERS)]
        pq.write_table(pa.Table.from_pylist(spine), tmp_path / "spine.parquet")
        source = FeatureSource(format="parquet", path="spine.parquet")
        spec = TrainingJobSpec(
            trainer="mlp_classifier",
            model="churn",
            dataset=Dataset(feature_service="churn", entity_source=source, label="users:churned"),
            hyperparameters={"epochs": 30, "hidden": 16},
        )

        job = await finished(q, (await q.training.submit_job(SubmitTrainingJob(spec=spec))).id)
        outside = with_source(spec, FeatureSource(format="parquet", path="/etc/passwd"))
        failed = await finished(
            q, (await q.training.submit_job(SubmitTrainingJob(spec=outside))).id
        )
        both = Dataset(
            feature_service="churn",
            entity_source=source,
            entity_rows=[{"user_id": 1, "event_timestamp": now.isoformat()}],
            label="users:churned",
        )
        refused = SubmitTrainingJob(spec=msgspec.structs.replace(spec, dataset=both))
        with pytest.raises(InvalidInput, match="not both"):
            await q.training.submit_job(refused)

    assert job.status == "succeeded", job.error
    assert job.version == 1
    assert failed.status == "failed"
    assert "outside the source roots" in (failed.error or "")


def with_source(spec: TrainingJobSpec, source: FeatureSource) -> TrainingJobSpec:
    dataset = msgspec.structs.replace(spec.dataset, entity_source=source)
    return msgspec.structs.replace(spec, dataset=dataset)
