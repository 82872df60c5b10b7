"""A failing subscriber is retried, listed as failed, then delivered by `quarry events retry`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.bootstrap import Platform
from app.cli import main
from app.kernel.settings import load_settings
from contracts.registry import RegisterVersion
from tests.fakes.models import relu_model_bytes
from tests.fakes.subscriber import Listener, listener_module


async def test_failed_delivery_is_listed_and_retried_exactly_once(
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("QUARRY_REGISTRY_DATABASE_URL", database_url)
    settings = load_settings(
        data_dir=tmp_path,
        events_max_attempts=3,
        events_retry_base_s=0.01,
        events_poll_s=0.05,
    )
    listener = Listener(failing=True)
    async with Platform(settings, extra_modules=[listener_module(listener)]) as platform:
        version = await platform.client("registry").register_version(
            RegisterVersion(name="churn", artifact=relu_model_bytes())
        )
        await platform.bus.drain(timeout=10)
        assert len(listener.calls) == 3  # the retry budget, then it stops
        assert listener.seen == []

        assert main(["--data-dir", str(tmp_path), "events", "failed"]) == 0
        failed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert [(f["subscriber"], f["type"], f["attempts"]) for f in failed] == [
            ("listener", "ModelVersionRegistered", 3)
        ]
        assert "listener is down" in failed[0]["last_error"]

        listener.failing = False
        assert main(["--data-dir", str(tmp_path), "events", "retry"]) == 0
        assert "registry: 1 failed deliveries queued again" in capsys.readouterr().out
        await platform.bus.drain(timeout=10)

        assert len(listener.calls) == 4
        assert [(e.name, e.version) for e in listener.seen] == [("churn", version.version)]
        assert main(["--data-dir", str(tmp_path), "events", "failed"]) == 0
        assert capsys.readouterr().out == ""
