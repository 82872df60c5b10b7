"""The console in a real headless Chromium against a real `quarry serve` with keys required:
log in, move an alias, start and abort a rollout, open a drift report and a training job; a read
key cannot act; the browser never asks anything of a host other than the server.

Chromium is the system package (``.ci/install-chromium``), driven by Playwright's Python package
without its browser download; every request that is not to 127.0.0.1 goes to a dead proxy and
is recorded, so a page that fetched anything from outside would fail here.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import app
from app.kernel.auth import KeyStore
from contracts.inference import Deployment, PutDeployment, Route
from contracts.monitoring import RunDriftCheck
from contracts.registry import RegisterVersion, SetAlias
from contracts.training import Dataset, SubmitTrainingJob, TrainingJobSpec
from tests.contract.registry_behaviour import reference_profile
from tests.fakes.browser import chromium
from tests.fakes.models import linear_onnx
from tests.fakes.server import Server

pytestmark = pytest.mark.slow  # starts a server process
sync_api = pytest.importorskip("playwright.sync_api")

MODEL = "churn"
DEPLOYMENT = "churn-live"
ROWS = [{"a": float(i), "b": float(i % 4), "y": 3.0 * i - 1.0} for i in range(40)]


@dataclass
class Served:
    server: Server
    keys: dict[str, str]
    report_id: str
    job_id: str | None


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    data = tmp_path_factory.mktemp("console-browser") / "data"
    data.mkdir()
    store = KeyStore(data / "api_keys.toml")
    keys = {w: store.create(w, s)[1] for w, s in {"admin": ["admin"], "reader": ["read"]}.items()}
    server = Server(data, env={"QUARRY_AUTH": "on"}).start()
    try:
        with app.connect_sync(server.url, api_key=keys["admin"]) as q:
            for seed in (1, 2):
                q.registry.register_version(
                    RegisterVersion(
                        name=MODEL,
                        artifact=linear_onnx(seed=seed),
                        reference_profile=reference_profile(),
                    )
                )
            q.registry.set_alias(SetAlias(name=MODEL, alias="champion", version=1))
            route = Route(model=f"{MODEL}:1", weight=1.0)
            q.inference.put_deployment(
                PutDeployment(deployment=Deployment(name=DEPLOYMENT, routes=[route]))
            )
            report = q.monitoring.run_drift_check(RunDriftCheck(model=MODEL))
            job_id = None
            if hasattr(q, "training"):
                spec = TrainingJobSpec(
                    trainer="mlp_regressor",
                    model="lin",
                    dataset=Dataset(rows=ROWS, features=["a", "b"], label="y"),
                    hyperparameters={"epochs": 2},
                )
                job_id = q.training.submit_job(SubmitTrainingJob(spec=spec)).id
        yield Served(server=server, keys=keys, report_id=report.id, job_id=job_id)
    finally:
        server.stop()


def test_a_user_logs_in_and_acts_and_a_reader_cannot(served: Served, tmp_path: Path) -> None:
    binary = chromium()
    base = served.server.url
    requests: list[str] = []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=binary,
            args=["--no-sandbox", "--disable-gpu"],
            proxy={"server": "127.0.0.1:9", "bypass": "127.0.0.1"},
        )
        try:
            page = browser.new_context().new_page()
            page.set_default_timeout(15_000)
            page.on("request", lambda request: requests.append(request.url))
            problems: list[str] = []  # script errors, refused resources (CSP), failed loads
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda error: problems.append(str(error)))

            # logging in: the console sends a browser without a key to its form
            page.goto(f"{base}/ui/models/{MODEL}")
            assert "/ui/login" in page.url
            page.fill("#key", served.keys["admin"])
            page.click("button[type=submit]")
            page.wait_for_url(re.compile(rf"/ui/models/{MODEL}$"))
            page.keyboard.press("Tab")  # the first stop skips the navigation
            assert page.evaluate("document.activeElement.textContent") == "Skip to content"

            # moving an alias
            form = page.locator("form[aria-label='Move an alias']")
            form.locator("input[name=alias]").fill("champion")
            form.locator("input[name=version]").fill("2")
            form.locator("button").click()
            sync_api.expect(page.locator(".flash")).to_contain_text(
                "churn@champion now points at version 2"
            )

            # starting a rollout, then aborting it
            page.goto(f"{base}/ui/deployments/{DEPLOYMENT}")
            form = page.locator("form[aria-label='Start a rollout']")
            form.locator("input[name=candidate]").fill(f"{MODEL}:2")
            form.locator("input[name=interval_s]").fill("600")
            form.locator("button").click()
            sync_api.expect(page.locator(".flash")).to_contain_text("rollout of churn:2 started")
            page.click("button[data-action=abort]")
            sync_api.expect(page.locator(".flash")).to_contain_text("rollout aborted")
            sync_api.expect(page.locator("h1 .badge")).to_have_text("aborted")

            # the model's monitoring page over another window, then a drift report from it
            page.goto(f"{base}/ui/monitoring/{MODEL}")
            shown = page.locator("form[aria-label='Choose what to show']")
            shown.locator("select[name=window]").select_option("6h")
            shown.locator("button[type=submit]").click()
            page.wait_for_url(re.compile(r"window=6h"))
            sync_api.expect(page.locator("h2", has_text="Summary")).to_contain_text("6h")
            page.click(f"a[href='/ui/monitoring/reports/{served.report_id}']")
            page.wait_for_url(re.compile(r"/ui/monitoring/reports/"))
            assert MODEL in page.content()

            # a training job's page
            if served.job_id is not None:
                page.goto(f"{base}/ui/training")
                page.click(f"a[href='/ui/training/jobs/{served.job_id}']")
                sync_api.expect(page.locator("h1")).to_contain_text("Training job")
                sync_api.expect(page.locator("pre.log")).to_contain_text("attempt 1 of 3 started")

            # a read key sees no actions, and a forged action is refused
            page.click("text=Log out")
            page.wait_for_url(re.compile(r"/ui/login"))
            page.fill("#key", served.keys["reader"])
            page.click("button[type=submit]")
            page.wait_for_url(re.compile(r"/ui$"))
            sync_api.expect(page.locator(".who")).to_contain_text("reader")
            page.goto(f"{base}/ui/models/{MODEL}")
            assert page.locator("[data-action]").count() == 0
            token = page.locator("input[name=csrf]").first.get_attribute("value")
            refused = page.request.post(
                f"{base}/ui/models/{MODEL}/aliases",
                form={"alias": "champion", "version": "1", "csrf": token or ""},
            )
            assert refused.status == 403
            page.reload()
            assert "@champion" in page.content()
            assert page.locator("td", has_text="@champion").count() >= 1
        finally:
            browser.close()

    outside = [url for url in requests if not url.startswith(f"{base}/")]
    assert not outside, outside
    assert not problems, problems
    assert any(url.endswith("/ui/static/htmx.min.js") for url in requests)
