"""Requests built in Python are checked as a decoded body would be before an in-process call:
a Struct's constructor checks no literals, ranges or types."""

from __future__ import annotations

from pathlib import Path

import pytest

import app
from contracts.common import InvalidInput
from contracts.features import Feature, ListFeatureViews, PutFeatureView
from contracts.registry import ListModels


async def test_a_value_outside_a_literal_is_refused_and_nothing_is_stored(tmp_path: Path) -> None:
    async with app.connect(data_dir=tmp_path) as q:
        bad = PutFeatureView(
            name="users",
            entities=["id"],
            features=[Feature(name="f", dtype="float64")],  # type: ignore[arg-type]
        )
        with pytest.raises(InvalidInput, match=r"\$\.features\[0\]\.dtype"):
            await q.features.put_view(bad)

        assert (await q.features.list_views(ListFeatureViews())).items == []


async def test_a_bound_is_checked_and_a_plain_dict_is_read_as_the_request(tmp_path: Path) -> None:
    async with app.connect(data_dir=tmp_path) as q:
        with pytest.raises(InvalidInput, match="limit"):
            await q.registry.list_models(ListModels(limit=0))

        page = await q.registry.list_models({"limit": 5})

    assert page.items == []
