"""The web console at /ui on the real app, in process: every page after a quickstart-like setup,
its 404 page, scopes and CSRF on actions, module errors as pages, nothing fetched from outside."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from litestar import Litestar
from litestar.testing import TestClient

from app.bootstrap import Platform, create_app
from app.kernel.auth import KeyStore
from app.kernel.events.outbox import outbox_tables
from app.kernel.settings import Settings
from app.modules.notifications import store as notifications_store
from contracts.common import Tensor, method_info
from contracts.features import Feature, PushRows, PutFeatureService, PutFeatureView, Value
from contracts.inference import (
    Deployment,
    InferenceService,
    PredictionRecord,
    PutDeployment,
    Route,
)
from contracts.monitoring import MonitoringService, RecordPredictions, RunDriftCheck
from contracts.registry import RegisterVersion, RegistryService, SetAlias
from contracts.training import (
    Dataset,
    SubmitTrainingJob,
    TrainingJobSpec,
    TrainingService,
)
from tests.contract.registry_behaviour import reference_profile
from tests.fakes.models import linear_onnx

MODEL = "churn"
TRAFFIC = 40
HOOK = "ops-hook"
NEWEST_ROW = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=3)
DEPLOYMENT = "churn-live"


@dataclass
class Console:
    """The served app with auth on, and one key per scope set."""

    http: TestClient[Litestar]
    keys: dict[str, str]
    report_id: str
    job_id: str

    def login(self, who: str) -> None:
        self.http.cookies.clear()
        form = self.http.get("/ui/login")
        answer = self.http.post(
            "/ui/login",
            data={"key": self.keys[who], "csrf": csrf_of(form.text), "next": "/ui"},
            follow_redirects=False,
        )
        assert answer.status_code == 303, answer.text
        assert answer.headers["location"] == "/ui"


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html[:2000]
    return found.group(1)


def call(http: TestClient[Litestar], method: Any, request: Any) -> Any:
    return http.blocking_portal.call(method, request)


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    data = tmp_path_factory.mktemp("console")
    keys = KeyStore(data / "api_keys.toml")
    secrets = {
        who: keys.create(who, scopes)[1]
        for who, scopes in {"admin": ["admin"], "reader": ["read"]}.items()
    }
    settings = Settings(data_dir=data, auth="on")
    platform = Platform(settings)
    with TestClient(create_app(platform, host="127.0.0.1")) as http:
        registry = platform.client("registry", caller="tests")
        for seed in (1, 2):
            call(
                http,
                registry.register_version,
                RegisterVersion(
                    name=MODEL,
                    artifact=linear_onnx(seed=seed),
                    metrics={"accuracy": 0.9},
                    tags={"team": "growth"},
                    reference_profile=reference_profile(),
                ),
            )
        call(http, registry.set_alias, SetAlias(name=MODEL, alias="champion", version=1))
        inference = platform.client("inference", caller="tests")
        deployment = Deployment(name=DEPLOYMENT, routes=[Route(model=f"{MODEL}:1", weight=1.0)])
        call(http, inference.put_deployment, PutDeployment(deployment=deployment))
        features = platform.client("features", caller="tests")
        view = PutFeatureView(
            name="subscribers",
            entities=["user_id"],
            features=[Feature(name="tenure", dtype="float")],
        )
        call(http, features.put_view, view)
        pushed: list[dict[str, Value]] = [
            {"user_id": user, "event_timestamp": (NEWEST_ROW - timedelta(hours=user)).isoformat()}
            for user in range(3)
        ]
        call(http, features.push, PushRows(view="subscribers", rows=pushed))
        call(
            http,
            features.put_service,
            PutFeatureService(name="churn-features", features=["subscribers:tenure"]),
        )
        monitoring = platform.client("monitoring", caller="tests")
        report = call(http, monitoring.run_drift_check, RunDriftCheck(model=MODEL))
        call(http, monitoring.record_predictions, RecordPredictions(records=_traffic()))
        _fail_deliveries(platform)
        training = platform.client("training", caller="tests")
        job = call(http, training.submit_job, SubmitTrainingJob(spec=_failing_job()))
        yield Console(http=http, keys=secrets, report_id=report.id, job_id=job.id)


def _traffic() -> list[PredictionRecord]:
    """Forty predictions served through the deployment over the last twenty minutes, one in
    five failed."""
    now = datetime.now(UTC)
    answer = {"probabilities": Tensor.from_numpy(np.array([[0.2, 0.8]], dtype=np.float32))}
    return [
        PredictionRecord(
            prediction_id=f"console-{i}",
            model=MODEL,
            version=1,
            status="unavailable" if i % 5 == 0 else "ok",
            latency_s=0.001 * (i + 1),
            at=now - timedelta(seconds=30 * i + 1),
            outputs={} if i % 5 == 0 else answer,
            deployment=DEPLOYMENT,
        )
        for i in range(TRAFFIC)
    ]


def _fail_deliveries(platform: Platform) -> None:
    """A webhook delivery and an event delivery to a subscriber, each out of attempts."""
    now = time.time()
    hooks = platform.databases["notifications"]
    webhook = {"url": "/hook", "events": ["*"], "secret": "s" * 20, "format": "json"}
    hooks.write_sync(
        lambda c: notifications_store.put_webhook(c, {"name": HOOK, **webhook}, now=now)
    )
    row = {
        "id": "delivery-1",
        "webhook": HOOK,
        "event_id": "event-1",
        "event_type": "ModelAliasChanged",
        "body": b"{}",
        "status": "failed",
        "attempts": 1,
        "round_attempts": 1,
        "next_attempt_at": now,
        "created_at": now,
        "updated_at": now,
    }
    hooks.write_sync(lambda c: c.execute(notifications_store.deliveries.insert().values(**row)))
    attempt = {"delivery_id": "delivery-1", "number": 1, "at": now, "duration_s": 0.1}
    hooks.write_sync(
        lambda c: c.execute(
            notifications_store.attempts.insert().values(**attempt, error="HTTP 502")
        )
    )
    outbox, deliveries = outbox_tables("registry")
    event = {"id": "event-2", "type": "ModelVersionRegistered", "payload": b"{}"}
    failed = {"event_id": "event-2", "subscriber": "inference", "status": "failed"}
    platform.databases["registry"].write_sync(
        lambda c: (
            c.execute(outbox.insert().values(**event, created_at=now, dispatched=True)),
            c.execute(
                deliveries.insert().values(
                    **failed, attempts=5, next_attempt_at=now, last_error="boom", updated_at=now
                )
            ),
        )
    )


def _failing_job() -> TrainingJobSpec:
    """A job whose dataset has a gap: it fails once its run reads it."""
    rows: list[dict[str, Value]] = [{"a": None if i == 3 else float(i), "y": 1.0} for i in range(9)]
    return TrainingJobSpec(
        trainer="mlp_regressor",
        model="gaps",
        dataset=Dataset(rows=rows, features=["a"], label="y"),
    )


PAGES = [
    "/ui",
    "/ui/models",
    f"/ui/models/{MODEL}",
    f"/ui/models/{MODEL}/versions/1",
    "/ui/deployments",
    f"/ui/deployments/{DEPLOYMENT}",
    "/ui/monitoring",
    f"/ui/monitoring/{MODEL}",
    "/ui/training",
    "/ui/features",
    "/ui/features/views/subscribers",
    "/ui/features/services/churn-features",
]


def test_every_page_renders_for_an_admin_with_its_actions(console: Console) -> None:
    console.login("admin")
    for path in PAGES:
        answer = console.http.get(path)
        assert answer.status_code == 200, (path, answer.text[:2000])
        assert answer.headers["content-type"].startswith("text/html")
    model = console.http.get(f"/ui/models/{MODEL}").text
    assert "Move alias" in model
    assert "@champion" in model
    assert "Start rollout" in console.http.get(f"/ui/deployments/{DEPLOYMENT}").text
    overview = console.http.get("/ui").text
    assert f"{MODEL}:1" in overview  # the deployment's traffic split


def test_a_feature_views_rows_and_freshness_are_shown(console: Console) -> None:
    console.login("reader")
    view = console.http.get("/ui/features/views/subscribers").text
    assert "<dt>rows</dt><dd>3</dd>" in view
    newest = re.escape(f"({NEWEST_ROW:%Y-%m-%d %H:%M:%S} UTC)")
    assert re.search(r"newest row \d+ min ago " + newest, view)
    listed = console.http.get("/ui/features").text
    assert re.search(r">subscribers</a></td>.*?<td>3</td><td>\d+ min ago</td>", listed)


def test_no_page_names_anything_outside_the_server(console: Console) -> None:
    console.login("admin")
    for path in PAGES:
        html = console.http.get(path).text
        for url in re.findall(r"""\s(?:src|href|action)=["']([^"']*)["']""", html):
            assert url.startswith(("/ui", "?", "#")), (path, url)
        assert "http://" not in html
        assert "https://" not in html


def test_the_root_sends_browsers_to_the_console(console: Console) -> None:
    answer = console.http.get("/", follow_redirects=False)
    assert answer.status_code in (302, 303)
    assert answer.headers["location"] == "/ui"


def test_without_a_key_the_console_asks_for_one(console: Console) -> None:
    console.http.cookies.clear()
    answer = console.http.get(f"/ui/models/{MODEL}", follow_redirects=False)
    assert answer.status_code == 303
    assert answer.headers["location"].startswith("/ui/login?next=/ui/models/")
    login = console.http.get("/ui/login")
    refused = console.http.post(
        "/ui/login", data={"key": "qk_not_a_key", "csrf": csrf_of(login.text)}
    )
    assert refused.status_code == 401
    assert "not valid" in refused.text


def test_the_key_cookie_is_httponly_and_strict(console: Console) -> None:
    console.http.cookies.clear()
    login = console.http.get("/ui/login")
    answer = console.http.post(
        "/ui/login",
        data={"key": console.keys["reader"], "csrf": csrf_of(login.text)},
        follow_redirects=False,
    )
    cookies = answer.headers.get_list("set-cookie")
    key_cookie = next(c for c in cookies if c.startswith("quarry_console_key="))
    assert "HttpOnly" in key_cookie
    assert "samesite=strict" in key_cookie.lower()


def test_unknown_names_render_the_console_404_page(console: Console) -> None:
    console.login("reader")
    for path in (
        "/ui/models/no-such-model",
        "/ui/deployments/no-such-deployment",
        "/ui/rollouts/no-such-rollout",
        "/ui/training/jobs/no-such-job",
        "/ui/features/views/no-such-view",
        "/ui/no/such/page",
    ):
        answer = console.http.get(path)
        assert answer.status_code == 404, path
        assert answer.headers["content-type"].startswith("text/html"), path
        assert "<h1>Not found</h1>" in answer.text, path


def test_a_read_key_sees_no_action_buttons(console: Console) -> None:
    console.login("reader")
    for path in (f"/ui/models/{MODEL}", f"/ui/deployments/{DEPLOYMENT}"):
        html = console.http.get(path).text
        assert "data-action" not in html, path
        assert 'method="post" action="/ui/logout"' in html  # only its own logout


def test_a_read_keys_action_is_refused(console: Console) -> None:
    console.login("reader")
    token = csrf_of(console.http.get("/ui").text)
    answer = console.http.post(
        f"/ui/models/{MODEL}/aliases", data={"alias": "champion", "version": "2", "csrf": token}
    )
    assert answer.status_code == 403
    assert "needs an API key with scope" in answer.text
    console.login("admin")
    assert "@champion → 1" in console.http.get("/ui/models").text


def test_a_forged_post_without_the_csrf_token_is_refused(console: Console) -> None:
    console.login("admin")
    forged = {"alias": "champion", "version": "2", "csrf": "forged"}
    for data in ({"alias": "champion", "version": "2"}, forged):
        answer = console.http.post(f"/ui/models/{MODEL}/aliases", data=data)
        assert answer.status_code == 403
        assert "security token" in answer.text
    assert "@champion → 1" in console.http.get("/ui/models").text


def test_an_admin_moves_an_alias_and_rolls_it_back(console: Console) -> None:
    console.login("admin")
    token = csrf_of(console.http.get(f"/ui/models/{MODEL}").text)
    moved = console.http.post(
        f"/ui/models/{MODEL}/aliases",
        data={"alias": "champion", "version": "2", "reason": "better", "csrf": token},
    )
    assert moved.status_code == 200
    assert "churn@champion now points at version 2" in moved.text
    back = console.http.post(f"/ui/models/{MODEL}/aliases/champion/rollback", data={"csrf": token})
    assert "rolled back to version 1" in back.text


def test_module_errors_show_the_modules_message_not_a_trace(console: Console) -> None:
    console.login("admin")
    token = csrf_of(console.http.get(f"/ui/models/{MODEL}").text)
    answer = console.http.post(
        f"/ui/models/{MODEL}/aliases",
        data={"alias": "champion", "version": "99", "csrf": token},
    )
    assert answer.status_code == 404
    assert "99" in answer.text
    assert "Traceback" not in answer.text
    bad = console.http.post(
        f"/ui/deployments/{DEPLOYMENT}/rollouts",
        data={"candidate": f"{MODEL}:2", "steps": "fifty", "csrf": token},
    )
    assert bad.status_code == 400
    assert "steps must be percentages" in bad.text


def test_a_rollout_starts_and_aborts(console: Console) -> None:
    console.login("admin")
    token = csrf_of(console.http.get(f"/ui/deployments/{DEPLOYMENT}").text)
    started = console.http.post(
        f"/ui/deployments/{DEPLOYMENT}/rollouts",
        data={"candidate": f"{MODEL}:2", "steps": "10, 100", "interval_s": "600", "csrf": token},
    )
    assert started.status_code == 200, started.text
    assert "rollout of churn:2 started" in started.text
    assert "Abort" in started.text
    abort = re.search(r'action="(/ui/rollouts/[^"]+/abort)"', started.text)
    assert abort
    aborted = console.http.post(abort.group(1), data={"csrf": token})
    assert "rollout aborted" in aborted.text
    assert "aborted by" not in aborted.text or "aborted in the console" in aborted.text


def test_the_drift_report_opens_from_the_console(console: Console) -> None:
    console.login("reader")
    listing = console.http.get(f"/ui/monitoring/{MODEL}").text
    assert f"/ui/monitoring/reports/{console.report_id}" in listing
    report = console.http.get(f"/ui/monitoring/reports/{console.report_id}")
    assert report.status_code == 200
    assert MODEL in report.text


def test_console_requests_are_rate_limited_like_the_api(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, rate_limit_per_s=0.001, rate_limit_burst=2)
    with TestClient(create_app(Platform(settings), host="127.0.0.1")) as http:
        answers = [http.get("/ui/login").status_code for _ in range(3)]
        assert answers == [200, 200, 429]
        limited = http.get("/ui/login")
        assert limited.headers["content-type"].startswith("text/html")
        assert "retry-after" in limited.headers


def test_every_console_action_needs_its_contract_methods_scope(console: Console) -> None:
    app = console.http.app
    assert isinstance(app, Litestar)
    scopes = {
        str(info.scope)
        for protocol in (RegistryService, InferenceService, MonitoringService, TrainingService)
        for info in map(method_info, vars(protocol).values())
        if info is not None
    }
    actions = [
        (route.path, handler.opt.get("scope"))
        for route in app.routes
        if route.path.startswith("/ui/") and not route.path.startswith(("/ui/login", "/ui/logout"))
        for handler in getattr(route, "route_handlers", [])
        if "POST" in handler.http_methods
    ]
    assert len(actions) == 8
    for path, scope in actions:
        assert scope in scopes, path


def test_over_https_the_key_cookie_is_secure(tmp_path: Path) -> None:
    keys = KeyStore(tmp_path / "api_keys.toml")
    _, key = keys.create("admin", ["admin"])
    app = create_app(Platform(Settings(data_dir=tmp_path, auth="on")), host="127.0.0.1")
    with TestClient(app, base_url="https://console.example") as http:
        login = http.get("/ui/login")
        answer = http.post(
            "/ui/login", data={"key": key, "csrf": csrf_of(login.text)}, follow_redirects=False
        )
    cookie = next(
        c for c in answer.headers.get_list("set-cookie") if c.startswith("quarry_console_key=")
    )
    assert "Secure" in cookie


def test_a_remote_module_that_is_down_is_shown_not_a_failure(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        modules=("registry", "monitoring", "inference", "training"),
        remotes={"features": "http://127.0.0.1:9"},  # nothing listens there
        service_token="s" * 32,
    )
    with TestClient(create_app(Platform(settings), host="127.0.0.1")) as http:
        overview = http.get("/ui")
        features = http.get("/ui/features")
    assert overview.status_code == 200
    assert re.search(
        r"<td>features</td><td>remote <small>http://127.0.0.1:9</small>", overview.text
    )
    assert features.status_code == 200
    assert "The feature views section is not available: module features" in features.text
    assert "Traceback" not in features.text


def test_a_rollout_on_a_new_deployment_is_promoted(console: Console) -> None:
    console.login("admin")
    token = csrf_of(console.http.get(f"/ui/deployments/{DEPLOYMENT}").text)
    started = console.http.post(
        "/ui/deployments/churn-canary/rollouts",
        data={
            "candidate": f"{MODEL}:2",
            "baseline": f"{MODEL}:1",
            "promote_alias": "",  # the champion stays where the other tests expect it
            "csrf": token,
        },
    )
    assert started.status_code == 200, started.text
    promote = re.search(r'action="(/ui/rollouts/[^"]+/promote)"', started.text)
    assert promote
    promoted = console.http.post(promote.group(1), data={"csrf": token})
    assert "rollout promoted" in promoted.text
    assert "promoted in the console" in promoted.text  # the decision's reason
    deployment = console.http.get("/ui/deployments/churn-canary").text
    routes = deployment.split("<h2>Routes</h2>")[1].split("</table>")[0]
    assert "churn:2" in routes, routes
    assert "churn:1" not in routes, routes


def test_after_login_the_console_never_sends_the_browser_elsewhere(console: Console) -> None:
    console.http.cookies.clear()
    login = console.http.get("/ui/login")
    for target in ("//evil.example/ui", "https://evil.example/ui", "/v1/registry/models"):
        answer = console.http.post(
            "/ui/login",
            data={"key": console.keys["reader"], "csrf": csrf_of(login.text), "next": target},
            follow_redirects=False,
        )
        assert answer.headers["location"] == "/ui", target
        login = console.http.get("/ui/login")


def test_the_overview_shows_each_deployments_traffic_and_the_failed_deliveries(
    console: Console,
) -> None:
    console.login("reader")
    overview = console.http.get("/ui").text
    row = overview.split(f'<a href="/ui/deployments/{DEPLOYMENT}">')[1].split("</tr>")[0]
    assert f"{DEPLOYMENT}: requests per second over the last hour, {TRAFFIC} requests" in row
    assert f"{DEPLOYMENT}: error rate over the last hour, 20.0% overall" in row
    assert row.count('<svg class="spark"') == 3
    assert f"{TRAFFIC} req" in row
    failed = overview.split('id="failed-h"')[1]
    assert f"webhook {HOOK}</td><td>ModelAliasChanged" in failed
    assert "HTTP 502" in failed
    assert "module inference</td><td>ModelVersionRegistered" in failed
    assert "boom" in failed


def test_a_models_monitoring_page_charts_the_chosen_window_and_version(console: Console) -> None:
    console.login("reader")
    page = console.http.get(f"/ui/monitoring/{MODEL}?window=6h&version=1")
    assert page.status_code == 200
    for caption in ("Requests per second", "Latency (ms)", "Error rate by code (%)"):
        assert f"<figcaption>{caption}</figcaption>" in page.text, caption
    assert "<figcaption>Prediction distribution</figcaption>" in page.text
    assert "<option selected>6h</option>" in page.text
    assert '<option value="1" selected>1</option>' in page.text
    assert 'aria-label="share of failed requests of churn:1 by error code"' in page.text
    assert f"<dt>requests</dt><dd>{TRAFFIC} " in page.text
    fallback = console.http.get(f"/ui/monitoring/{MODEL}?window=forever").text
    assert "<option selected>1h</option>" in fallback
    assert "every version</option>" in fallback
    unknown = console.http.get("/ui/monitoring/no-such-model")
    assert unknown.status_code == 404
    assert "<h1>Not found</h1>" in unknown.text


def test_the_series_and_failed_deliveries_are_in_the_api(console: Console) -> None:
    auth = {"authorization": f"Bearer {console.keys['reader']}"}
    series = console.http.get(
        f"/v1/monitoring/deployments/{DEPLOYMENT}/series?window=1h&buckets=6", headers=auth
    )
    assert series.status_code == 200, series.text
    points = series.json()["points"]
    assert len(points) == 6
    assert sum(p["requests"] for p in points) == TRAFFIC
    by_model = console.http.get(f"/v1/monitoring/models/{MODEL}/series?window=1h", headers=auth)
    assert sum(p["errors"] for p in by_model.json()["points"]) == TRAFFIC // 5
    failed = console.http.get("/v1/notifications/deliveries/failed", headers=auth)
    assert failed.status_code == 200, failed.text
    assert [d["webhook"] for d in failed.json()["items"]] == [HOOK]


def test_a_jobs_page_shows_its_log_lines(console: Console) -> None:
    console.login("reader")
    deadline = time.monotonic() + 60
    auth = {"authorization": f"Bearer {console.keys['reader']}"}
    while True:
        job = console.http.get(f"/v1/training/jobs/{console.job_id}", headers=auth).json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            break
        assert time.monotonic() < deadline, job
        time.sleep(0.05)
    assert job["status"] == "failed"
    logs = console.http.get(f"/v1/training/jobs/{console.job_id}/logs", headers=auth).json()
    lines = [entry["line"] for entry in logs["lines"]]
    assert lines[0] == "attempt 1 of 3 started"
    assert lines[-1].startswith("failed: ")
    assert "missing or non-finite" in lines[-1]
    page = console.http.get(f"/ui/training/jobs/{console.job_id}").text
    log = page.split("<h2>Log</h2>")[1].split("</pre>")[0]
    assert "[attempt 1] attempt 1 of 3 started" in log
    assert "[attempt 1] failed: " in log
