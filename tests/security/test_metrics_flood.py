"""``/metrics`` stays small, private and cheap whatever paths and label values arrive.

Regressions: every request path, even one answered 401 or 404, became an ``http.route`` label
value (1,500 random paths grew ``/metrics`` from 43 KB to 13 MB, and a scrape then blocked the
event loop for seconds), and ``/metrics`` listed every URL anyone had asked for.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest
from prometheus_client import REGISTRY
from prometheus_client.core import GaugeMetricFamily, Metric

from app.bootstrap import Platform, create_app
from app.kernel import metrics
from app.kernel.auth import KeyStore
from app.kernel.settings import ConfigError, Settings, load_settings

TOKEN = "metrics-flood-service-token"
PUBLIC, LOOPBACK = "0.0.0.0", "127.0.0.1"  # auth "auto" decides by the bound host
FLOOD = 1500  # random paths per kind of answer


@asynccontextmanager
async def served(
    tmp_path: Path,
    *,
    host: str = LOOPBACK,
    auth: Literal["auto", "on", "off"] = "auto",
    metrics_auth: Literal["auto", "on", "off"] = "auto",
) -> AsyncIterator[httpx.AsyncClient]:
    """The real app (registry only) on ``host``, with the kernel's auth and telemetry."""
    settings = Settings(
        data_dir=tmp_path,
        modules=("registry",),
        auth=auth,
        metrics_auth=metrics_auth,
        service_token=TOKEN,
        rate_limit_per_s=0,
        log_level="WARNING",
    )
    async with Platform(settings) as platform:
        transport = httpx.ASGITransport(app=create_app(platform, host=host))
        async with httpx.AsyncClient(transport=transport, base_url="http://q") as http:
            yield http


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_error(answer: httpx.Response, status: int, code: str) -> None:
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert set(body) == {"error", "code", "details"}
    assert body["code"] == code


# --- random paths never become label values -------------------------------------------------


@pytest.mark.parametrize(
    ("host", "unknown_status", "templated_status"),
    [(LOOPBACK, 404, 404), (PUBLIC, 404, 401)],
    ids=["auth-off", "auth-on"],
)
async def test_a_flood_of_random_paths_leaves_metrics_bounded_and_free_of_them(
    tmp_path: Path, host: str, unknown_status: int, templated_status: int
) -> None:
    """Unknown paths (404 before routing) and a route's random parameters (404 from the handler,
    or 401 from the auth middleware when auth is on) add no series and name no path."""
    async with served(tmp_path, host=host) as http:

        async def flood(count: int) -> list[str]:
            tokens = [uuid.uuid4().hex for _ in range(count)]
            for token in tokens:
                unknown = await http.get(f"/{token}/x")
                templated = await http.get(f"/v1/registry/models/{token}")
                assert (unknown.status_code, templated.status_code) == (
                    unknown_status,
                    templated_status,
                )
            return tokens

        async def scrape() -> str:
            answer = await http.get("/metrics", headers=bearer(TOKEN))
            assert answer.status_code == 200, answer.text
            return answer.text

        await flood(3)  # the label sets the flood will use, so both scrapes already have them
        before = await scrape()
        tokens = await flood(FLOOD)
        after = await scrape()

    assert len(after) < len(before) + 16_384, (len(before), len(after))
    assert not [t for t in tokens if t in after]
    assert 'http_route="<unmatched>"' in after
    assert 'http_route="/v1/registry/models/{name}"' in after


# --- every labelled instrument has a cap ------------------------------------------------------


async def test_a_flooded_instrument_keeps_its_cap_and_counts_the_overflow(tmp_path: Path) -> None:
    flooded = metrics.shared(metrics.Counter, "quarry.test.flooded", max_series=100)
    for n in range(5000):
        flooded.add(1, {"caller": f"c{n}"})

    async with served(tmp_path) as http:
        text = (await http.get("/metrics")).text

    series = [line for line in text.splitlines() if line.startswith("quarry_test_flooded_total{")]
    assert len(series) == 101  # 100 label sets and the one overflow series
    assert 'quarry_test_flooded_total{caller="",otel_metric_overflow="true"} 4900.0' in series
    assert 'quarry_metric_series_overflow_total{instrument="quarry_test_flooded"} 4900.0' in text
    assert "c4999" not in text


def test_the_cap_is_a_setting_applied_to_the_process(tmp_path: Path) -> None:
    settings = load_settings({"QUARRY_METRICS_MAX_SERIES": "50"}, data_dir=tmp_path)
    try:
        create_app(Platform(settings))
        applied = metrics.series_limit()
    finally:
        metrics.limit_series(metrics.DEFAULT_MAX_SERIES)

    assert applied == 50
    with pytest.raises(ConfigError, match="QUARRY_METRICS_MAX_SERIES"):
        load_settings({"QUARRY_METRICS_MAX_SERIES": "0"})


# --- a scrape runs off the event loop ---------------------------------------------------------


class _WhereCollected:
    """A collector that notes whether it ran on a thread with a running event loop."""

    def __init__(self) -> None:
        self.on_loop: list[bool] = []

    def collect(self) -> Iterator[Metric]:
        try:
            asyncio.get_running_loop()
            self.on_loop.append(True)
        except RuntimeError:
            self.on_loop.append(False)
        yield GaugeMetricFamily("quarry_test_where_collected", "Test.", value=1)

    def describe(self) -> list[Metric]:
        return []


async def test_metrics_are_rendered_off_the_event_loop(tmp_path: Path) -> None:
    where = _WhereCollected()
    REGISTRY.register(where)  # type: ignore[arg-type]
    try:
        async with served(tmp_path) as http:
            answer = await http.get("/metrics")
    finally:
        REGISTRY.unregister(where)  # type: ignore[arg-type]

    assert answer.status_code == 200
    assert "quarry_test_where_collected 1.0" in answer.text
    assert where.on_loop == [False]


# --- QUARRY_METRICS_AUTH ----------------------------------------------------------------------


def _keys(tmp_path: Path) -> dict[str, str]:
    store = KeyStore(tmp_path / "api_keys.toml")
    return {
        "read": store.create("scraper", ["read"])[1],
        "predict": store.create("predictor", ["predict"])[1],
    }


@pytest.mark.parametrize(
    ("host", "auth", "metrics_auth"),
    [
        (LOOPBACK, "off", "on"),
        (LOOPBACK, "on", "on"),
        (PUBLIC, "auto", "auto"),
        (PUBLIC, "on", "auto"),
    ],
)
async def test_with_metrics_auth_a_scrape_needs_a_read_key_or_the_service_token(
    tmp_path: Path, host: str, auth: Literal["auto", "on", "off"], metrics_auth: Any
) -> None:
    keys = _keys(tmp_path)
    async with served(tmp_path, host=host, auth=auth, metrics_auth=metrics_auth) as http:
        anonymous = await http.get("/metrics")
        wrong_key = await http.get("/metrics", headers=bearer("qk_not_a_key"))
        no_read = await http.get("/metrics", headers=bearer(keys["predict"]))
        with_read = await http.get("/metrics", headers=bearer(keys["read"]))
        with_token = await http.get("/metrics", headers=bearer(TOKEN))

    assert_error(anonymous, 401, "unauthenticated")
    assert anonymous.headers["www-authenticate"] == "Bearer"
    assert_error(wrong_key, 401, "unauthenticated")
    assert_error(no_read, 403, "permission_denied")
    assert with_read.status_code == 200
    assert "http_server_request_duration_seconds" in with_read.text
    assert with_token.status_code == 200


@pytest.mark.parametrize(
    ("host", "auth", "metrics_auth"),
    [(LOOPBACK, "auto", "auto"), (LOOPBACK, "off", "auto"), (PUBLIC, "on", "off")],
)
async def test_without_metrics_auth_a_scrape_needs_nothing(
    tmp_path: Path, host: str, auth: Literal["auto", "on", "off"], metrics_auth: Any
) -> None:
    async with served(tmp_path, host=host, auth=auth, metrics_auth=metrics_auth) as http:
        answer = await http.get("/metrics")
        ignored = await http.get("/metrics", headers=bearer("qk_not_a_key"))

    assert answer.status_code == 200
    assert ignored.status_code == 200


def test_the_old_open_metrics_variable_is_refused_naming_its_replacement() -> None:
    with pytest.raises(ConfigError, match="QUARRY_METRICS_AUTH"):
        load_settings({"QUARRY_OPEN_METRICS": "false"})
    with pytest.raises(ConfigError, match="QUARRY_METRICS_AUTH='sometimes'"):
        load_settings({"QUARRY_METRICS_AUTH": "sometimes"})
