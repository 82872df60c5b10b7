"""Webhooks: signed deliveries of platform events to a real HTTP receiver on 127.0.0.1, retries
and the failed listing, redelivery, deduplication by event id, and the SSRF refusals."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.bootstrap import Platform, create_app
from app.kernel.events import EventMeta
from app.kernel.settings import Settings
from app.modules.inference.settings import InferenceSettings
from app.modules.notifications.settings import NotificationsSettings
from contracts.monitoring import RunDriftCheck
from contracts.notifications import Delivery, ListDeliveries, PutWebhook, Redeliver
from contracts.registry import ModelVersionRegistered, RegisterVersion, SetAlias
from tests.conftest import REDIS_URL
from tests.fakes.models import linear_onnx
from tests.fakes.server import free_port
from tests.integration import test_monitoring as monitoring_tests

SECRET = "s3cret-for-the-tests-only"
FAST_RETRIES = NotificationsSettings(
    webhook_hosts=("127.0.0.1/32",),
    retry_base_s=0.01,
    retry_cap_s=0.05,
    max_attempts=3,
    timeout_s=5.0,
)


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """A tiny HTTP server on 127.0.0.1 answering every POST with ``status``."""

    port: int = 0
    status: int = 204
    host: str = "127.0.0.1"
    answers: bool = True
    """``False``: take the request and never answer."""
    extra_headers: dict[str, str] = field(default_factory=dict)
    arrived: asyncio.Queue[Received] = field(default_factory=asyncio.Queue)
    server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/hook"

    async def start(self) -> Receiver:
        self.server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def next(self) -> Received:
        return await asyncio.wait_for(self.arrived.get(), timeout=10)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        request_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines:
            if ":" in line:
                key, _, value = line.partition(":")
                headers[key.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        self.arrived.put_nowait(Received(request_line.split(" ")[1], headers, body))
        if not self.answers:
            await reader.read()  # until the sender gives up and hangs up
            writer.close()
            return
        extra = "".join(f"{k}: {v}\r\n" for k, v in self.extra_headers.items())
        head = f"HTTP/1.1 {self.status} X\r\ncontent-length: 0\r\nconnection: close\r\n"
        writer.write(f"{head}{extra}\r\n".encode())
        await writer.drain()
        writer.close()


def verify(secret: str, header: str, body: bytes, tolerance_s: float = 300) -> bool:
    """What a receiver does (the README's snippet)."""
    parts = dict(item.split("=", 1) for item in header.split(","))
    timestamp = int(parts["t"])
    signed = f"{timestamp}.".encode() + body
    expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts["v1"]) and abs(time.time() - timestamp) < tolerance_s


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 10.0) -> None:
    """Poll ``check`` (through the contract, as a user would) until it holds."""
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, "the condition never held"
        await asyncio.sleep(0.02)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    started = await Receiver().start()
    yield started
    await started.stop()


def _settings(tmp_path: Path, config: NotificationsSettings, **urls: str) -> Settings:
    settings = Settings(data_dir=tmp_path, modules=("registry", "notifications"))
    if urls:
        settings = settings.replace(database_urls=urls)
    return settings.with_module(config)


@pytest.fixture
async def platform(tmp_path: Path) -> AsyncIterator[Platform]:
    async with Platform(_settings(tmp_path, FAST_RETRIES)) as platform:
        yield platform


@pytest.fixture(params=["embedded", "postgres-redis"])
async def any_platform(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Platform]:
    """The platform on embedded defaults, or on PostgreSQL with events over Redis Streams."""
    settings = _settings(tmp_path, FAST_RETRIES)
    if request.param == "postgres-redis":
        url = request.getfixturevalue("postgres_schema_url")
        settings = settings.replace(
            database_urls={"registry": url, "notifications": url},
            events_url=REDIS_URL,
            redis_prefix=request.getfixturevalue("redis_namespace") + ":",
            rate_limit_url="memory://",  # the in-process app runs no lifespan to close a client
        )
    async with Platform(settings) as platform:
        yield platform


async def _deliveries(platform: Platform, webhook: str) -> list[Delivery]:
    notifications = platform.client("notifications", caller="tests")
    page = await notifications.list_deliveries(ListDeliveries(webhook=webhook))
    return list(page.items)


async def test_a_version_registration_and_an_alias_change_arrive_signed(
    any_platform: Platform, receiver: Receiver
) -> None:
    platform = any_platform
    transport = httpx.ASGITransport(app=create_app(platform, host="127.0.0.1"))
    async with httpx.AsyncClient(transport=transport, base_url="http://q") as http:
        put = await http.put(
            "/v1/notifications/webhooks/ops",
            json={"url": receiver.url, "events": ["Model*"], "secret": SECRET},
        )
        assert put.status_code == 200, put.text
        assert "secret" not in put.json() or put.json()["secret"] is None

        registry = platform.client("registry", caller="tests")
        await registry.register_version(RegisterVersion(name="churn", artifact=linear_onnx()))
        registered = await receiver.next()
        await registry.set_alias(SetAlias(name="churn", alias="champion", version=1))
        moved = await receiver.next()

        for got in (registered, moved):
            assert verify(SECRET, got.headers["quarry-signature"], got.body)
            assert not verify("another-secret-entirely", got.headers["quarry-signature"], got.body)
        assert registered.json()["type"] == "ModelVersionRegistered"
        assert registered.json()["data"]["name"] == "churn"
        assert registered.json()["data"]["version"] == 1
        assert moved.json()["data"] == {
            "name": "churn",
            "alias": "champion",
            "version": 1,
            "previous_version": None,
        }
        assert moved.headers["quarry-event"] == "ModelAliasChanged"
        assert moved.headers["quarry-event-id"] == moved.json()["id"]

        await eventually(lambda: _all(platform, "ops", lambda d: d.status == "delivered", count=2))
        listed = await http.get("/v1/notifications/webhooks/ops/deliveries")
        assert listed.status_code == 200
        items = listed.json()["items"]
        assert [i["event_type"] for i in items] == ["ModelAliasChanged", "ModelVersionRegistered"]
        assert items[0]["attempts"][0]["status_code"] == 204


async def test_a_drift_detection_arrives_signed(tmp_path: Path, receiver: Receiver) -> None:
    modules = ("registry", "monitoring", "inference", "notifications")
    settings = Settings(data_dir=tmp_path, modules=modules).with_module(
        FAST_RETRIES, InferenceSettings(prediction_log_sample=1.0)
    )
    async with Platform(settings) as platform:
        notifications = platform.client("notifications", caller="tests")
        await notifications.put_webhook(
            PutWebhook(name="drift", url=receiver.url, events=["DriftDetected"], secret=SECRET)
        )
        q = monitoring_tests.Q(platform)
        await monitoring_tests.register_profiled(q, "shifted", seed=1)
        await monitoring_tests.send(q, "shifted", [0.0, 1.5, 0.0, 1.5], seed=2)
        report = await q.monitoring.run_drift_check(RunDriftCheck(model="shifted", window_s=600))

        got = await receiver.next()
        assert verify(SECRET, got.headers["quarry-signature"], got.body)
        assert got.json()["type"] == "DriftDetected"
        assert got.json()["data"]["report_id"] == report.id
        assert got.json()["data"]["features"] == ["b", "d"]


async def test_an_ipv6_receiver_gets_its_delivery(tmp_path: Path) -> None:
    try:
        receiver = await Receiver(host="::1").start()
    except OSError:
        pytest.skip("no IPv6 loopback here")
    config = msgspec.structs.replace(FAST_RETRIES, webhook_hosts=("::1/128",))
    try:
        async with Platform(_settings(tmp_path, config)) as platform:
            notifications = platform.client("notifications", caller="tests")
            await notifications.put_webhook(
                PutWebhook(name="v6", url=receiver.url, events=["*"], secret=SECRET)
            )
            registry = platform.client("registry", caller="tests")
            await registry.register_version(RegisterVersion(name="churn", artifact=linear_onnx()))
            got = await receiver.next()
            assert got.headers["host"] == f"[::1]:{receiver.port}"
            assert verify(SECRET, got.headers["quarry-signature"], got.body)
    finally:
        await receiver.stop()


async def _all(
    platform: Platform, webhook: str, check: Callable[[Delivery], bool], count: int
) -> bool:
    found = await _deliveries(platform, webhook)
    return len(found) == count and all(check(d) for d in found)


async def test_a_generated_secret_is_answered_once_and_signs(
    platform: Platform, receiver: Receiver
) -> None:
    notifications = platform.client("notifications", caller="tests")
    made = await notifications.put_webhook(
        PutWebhook(name="slack", url=receiver.url, events=["*"], format="slack")
    )
    assert made.secret is not None
    assert made.secret.startswith("whsec_")
    again = await notifications.put_webhook(
        PutWebhook(name="slack", url=receiver.url, events=["*"], format="slack")
    )
    assert again.secret is None  # kept, not shown again

    registry = platform.client("registry", caller="tests")
    await registry.register_version(RegisterVersion(name="churn", artifact=linear_onnx()))
    got = await receiver.next()
    assert verify(made.secret, got.headers["quarry-signature"], got.body)
    assert got.json()["text"].startswith(
        "[Quarry] ModelVersionRegistered from registry: name=churn"
    )


@pytest.mark.parametrize("status", [503, 302])
async def test_a_failing_receiver_gets_retries_then_the_delivery_is_listed_failed(
    platform: Platform, receiver: Receiver, status: int
) -> None:
    receiver.status = status
    receiver.extra_headers = {"location": "http://169.254.169.254/"} if status == 302 else {}
    notifications = platform.client("notifications", caller="tests")
    await notifications.put_webhook(
        PutWebhook(name="ops", url=receiver.url, events=["ModelVersionRegistered"], secret=SECRET)
    )
    registry = platform.client("registry", caller="tests")
    await registry.register_version(RegisterVersion(name="churn", artifact=linear_onnx()))

    await eventually(lambda: _all(platform, "ops", lambda d: d.status == "failed", count=1))
    (failed,) = await _deliveries(platform, "ops")
    assert [a.status_code for a in failed.attempts] == [status] * FAST_RETRIES.max_attempts
    assert receiver.arrived.qsize() == FAST_RETRIES.max_attempts  # never followed elsewhere
    assert all(a.error for a in failed.attempts)
    if status == 302:
        assert "redirects are not followed" in (failed.attempts[0].error or "")


@pytest.mark.parametrize(
    ("timeout_s", "waits_for"), [(0.5, "the failure"), (60.0, "the other receiver")]
)
async def test_a_receiver_that_never_answers_times_out_and_holds_up_no_other(
    tmp_path: Path, receiver: Receiver, timeout_s: float, waits_for: str
) -> None:
    silent = await Receiver(answers=False).start()
    config = msgspec.structs.replace(FAST_RETRIES, timeout_s=timeout_s, max_attempts=2)
    try:
        async with Platform(_settings(tmp_path, config)) as platform:
            notifications = platform.client("notifications", caller="tests")
            await notifications.put_webhook(
                PutWebhook(name="silent", url=silent.url, events=["*"], secret=SECRET)
            )
            registry = platform.client("registry", caller="tests")
            await registry.register_version(RegisterVersion(name="churn", artifact=linear_onnx()))
            await silent.next()
            if waits_for == "the other receiver":
                # the silent receiver holds its attempt for a minute: another webhook's
                # deliveries go out meanwhile
                await notifications.put_webhook(
                    PutWebhook(name="ops", url=receiver.url, events=["*"], secret=SECRET)
                )
                await registry.register_version(
                    RegisterVersion(name="other", artifact=linear_onnx())
                )
                got = await receiver.next()
                assert got.json()["data"]["name"] == "other"
                return
            await eventually(
                lambda: _all(platform, "silent", lambda d: d.status == "failed", count=1)
            )
            (failed,) = await _deliveries(platform, "silent")
            assert [a.error for a in failed.attempts] == ["no answer within 0.5 s"] * 2
    finally:
        await silent.stop()


async def test_with_one_sending_slot_every_delivery_still_goes_out(
    tmp_path: Path, receiver: Receiver
) -> None:
    config = msgspec.structs.replace(FAST_RETRIES, concurrency=1)
    async with Platform(_settings(tmp_path, config)) as platform:
        notifications = platform.client("notifications", caller="tests")
        for name in ("a", "b", "c"):
            await notifications.put_webhook(PutWebhook(name=name, url=receiver.url, events=["*"]))
        registry = platform.client("registry", caller="tests")
        await registry.register_version(RegisterVersion(name="churn", artifact=linear_onnx()))
        got = [await receiver.next() for _ in range(3)]
        assert len({g.headers["quarry-delivery"] for g in got}) == 3
        for name in ("a", "b", "c"):
            await eventually(
                lambda name=name: _all(platform, name, lambda d: d.status == "delivered", 1)
            )


async def test_deliveries_filter_by_status_and_go_with_their_webhook(
    platform: Platform, receiver: Receiver
) -> None:
    down = Receiver(port=free_port())
    notifications = platform.client("notifications", caller="tests")
    await notifications.put_webhook(PutWebhook(name="up", url=receiver.url, events=["*"]))
    await notifications.put_webhook(PutWebhook(name="down", url=down.url, events=["*"]))
    registry = platform.client("registry", caller="tests")
    await registry.register_version(RegisterVersion(name="churn", artifact=linear_onnx()))
    await eventually(lambda: _all(platform, "down", lambda d: d.status == "failed", count=1))
    await eventually(lambda: _all(platform, "up", lambda d: d.status == "delivered", count=1))

    transport = httpx.ASGITransport(app=create_app(platform, host="127.0.0.1"))
    async with httpx.AsyncClient(transport=transport, base_url="http://q") as http:
        base = "/v1/notifications/webhooks/down/deliveries"
        failed = await http.get(base, params={"status": "failed"})
        assert [d["status"] for d in failed.json()["items"]] == ["failed"]
        assert (await http.get(base, params={"status": "delivered"})).json()["items"] == []
        assert (await http.get(base, params={"status": "lost"})).status_code == 400
        assert (await http.delete("/v1/notifications/webhooks/down")).status_code == 200
        assert (await http.get(base)).status_code == 404
        listed = await http.get("/v1/notifications/webhooks")
        assert [w["name"] for w in listed.json()["items"]] == ["up"]
        text = (await http.get("/metrics")).text
    attempts = {
        sample.labels["outcome"]: sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "quarry_notifications_attempts"
        for sample in family.samples
        if sample.name.endswith("_total")
    }
    assert attempts["delivered"] >= 1
    assert attempts["retry"] >= FAST_RETRIES.max_attempts - 1
    assert attempts["failed"] >= 1


async def test_a_receiver_that_is_down_fails_then_a_redelivery_reaches_it(
    any_platform: Platform,
) -> None:
    platform = any_platform
    down = Receiver(port=free_port())
    notifications = platform.client("notifications", caller="tests")
    await notifications.put_webhook(
        PutWebhook(name="ops", url=down.url, events=["ModelVersionRegistered"], secret=SECRET)
    )
    registry = platform.client("registry", caller="tests")
    await registry.register_version(RegisterVersion(name="churn", artifact=linear_onnx()))
    await eventually(lambda: _all(platform, "ops", lambda d: d.status == "failed", count=1))
    (failed,) = await _deliveries(platform, "ops")
    assert len(failed.attempts) == FAST_RETRIES.max_attempts
    assert all(a.status_code is None and a.error for a in failed.attempts)

    await down.start()
    try:
        again = await notifications.redeliver(Redeliver(webhook="ops", id=failed.id))
        assert again.status == "pending"
        got = await down.next()
        assert verify(SECRET, got.headers["quarry-signature"], got.body)
        assert got.json()["id"] == failed.event_id
        await eventually(lambda: _all(platform, "ops", lambda d: d.status == "delivered", count=1))
        (delivered,) = await _deliveries(platform, "ops")
        assert len(delivered.attempts) == FAST_RETRIES.max_attempts + 1
        assert delivered.attempts[-1].status_code == 204
    finally:
        await down.stop()


async def test_an_event_handed_over_twice_is_delivered_once(
    tmp_path: Path, database_url: str, receiver: Receiver
) -> None:
    settings = _settings(tmp_path, FAST_RETRIES, notifications=database_url)
    async with Platform(settings) as platform:
        notifications = platform.client("notifications", caller="tests")
        await notifications.put_webhook(
            PutWebhook(name="ops", url=receiver.url, events=["*"], secret=SECRET)
        )
        handler = platform.built["notifications"].subscriptions[ModelVersionRegistered]
        event = ModelVersionRegistered(name="churn", version=1, sha256="0" * 64, size=10)
        meta = EventMeta(
            id="evt-1",
            type="ModelVersionRegistered",
            publisher="registry",
            created_at=1.0,
            attempt=1,
        )
        await handler(event, meta)
        await handler(event, meta)  # at-least-once: the bus may hand it over again

        got = await receiver.next()
        assert got.json()["id"] == "evt-1"
        await eventually(lambda: _all(platform, "ops", lambda d: d.status == "delivered", count=1))
        assert receiver.arrived.empty()


REFUSED = [
    ("http://10.1.2.3/hook", "private"),
    ("http://169.254.169.254/latest/meta-data/", "link-local"),
    ("http://[::ffff:169.254.169.254]/", "link-local"),
    ("http://localhost:9/hook", "loopback"),
    ("ftp://127.0.0.1/hook", "only http and https"),
    ("file:///etc/passwd", "only http and https"),
    ("http://user:pw@example.com/", "credentials"),
    ("http:///nohost", "no host"),
]


async def test_urls_reaching_inside_are_refused(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, modules=("notifications",))
    async with Platform(settings) as platform:  # the default allow-list: public hosts only
        transport = httpx.ASGITransport(app=create_app(platform, host="127.0.0.1"))
        async with httpx.AsyncClient(transport=transport, base_url="http://q") as http:
            for url, why in REFUSED:
                answer = await http.put(
                    "/v1/notifications/webhooks/ops", json={"url": url, "events": ["*"]}
                )
                assert answer.status_code == 400, (url, answer.text)
                assert answer.json()["code"] == "invalid_input"
                assert why in answer.json()["error"], (url, answer.text)
            assert (await http.get("/v1/notifications/webhooks/ops")).status_code == 404


async def test_hosts_outside_the_allow_list_and_unknown_events_are_refused(
    tmp_path: Path,
) -> None:
    config = NotificationsSettings(webhook_hosts=("hooks.example.com",))
    settings = Settings(data_dir=tmp_path, modules=("notifications",)).with_module(config)
    async with Platform(settings) as platform:
        transport = httpx.ASGITransport(app=create_app(platform, host="127.0.0.1"))
        async with httpx.AsyncClient(transport=transport, base_url="http://q") as http:
            elsewhere = await http.put(
                "/v1/notifications/webhooks/ops",
                json={"url": "https://evil.example.org/", "events": ["*"]},
            )
            assert elsewhere.status_code == 400
            assert "not allowed by QUARRY_WEBHOOK_HOSTS" in elsewhere.json()["error"]
            typo = await http.put(
                "/v1/notifications/webhooks/ops",
                json={"url": "http://127.0.0.1/", "events": ["ModelVersionRegistred"]},
            )
            assert typo.status_code == 400
            assert "unknown event type 'ModelVersionRegistred'" in typo.json()["error"]
