"""The platform flow through the public process in every placement, on real processes.

The flow: a feature view, a push, a feature service, a training job on point-in-time data, a
version gated to ``champion``, predict by entity, the monitoring summary, a drift check (and the
webhook list, so the notifications module's routes are crossed too). It runs through the public
process of each placement:

- **<module> remote**, for each of the six modules in turn: the public process hosts every other
  module and calls that one in a process of its own (which reaches the rest through the public
  process);
- **all separate**: every module in a process of its own, behind a gateway that hosts no module
  (``QUARRY_MODULES=none``); each request of the flow is one trace across the processes it
  crosses (every process exports spans over OTLP to a receiver run by the test).

Events travel on Redis Streams (a key prefix per placement); tasks stay in-process, so training
jobs run in the process hosting training. Each database case runs its placements at once, as
many as the machine has cores (at least two): **all separate** on embedded SQLite (a data
directory per process) and on PostgreSQL (a schema per placement), and each module remote on
one of the two, alternating (registry, monitoring and training on PostgreSQL; features,
inference and notifications on SQLite), which keeps the whole matrix to a few minutes on two
cores (``QUARRY_TEST_EVERY_PLACEMENT=1`` runs each module remote on both). The README's quick
start runs against the gateway of the SQLite case too.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import REDIS_URL, postgres_schema
from tests.e2e._processes import Receiver, eventually, seed
from tests.e2e.conftest import TOKEN
from tests.e2e.test_readme import README, SECTION, script, section, sh_blocks
from tests.fakes.server import Server, free_port

pytestmark = pytest.mark.slow
pytest.importorskip("torch")

MODULES = ("registry", "features", "monitoring", "inference", "training", "notifications")
ON_POSTGRES = ("registry", "monitoring", "training")
"""Modules whose remote placement runs on PostgreSQL; the others' runs on SQLite."""
GATEWAY = "gateway"
ACCOUNTS = 120


@dataclass
class Placement:
    """Which modules each process hosts; ``public`` is the process the flow talks to."""

    name: str
    processes: dict[str, tuple[str, ...]]
    """Process name -> the modules it hosts (none: a gateway)."""
    public: str
    traced: bool = False
    readme: bool = False
    """Whether the README's quick start runs against the public process too, after the flow."""
    servers: dict[str, Server] = field(default_factory=dict)

    def host_of(self, module: str) -> str:
        return next(p for p, hosted in self.processes.items() if module in hosted)


def one_remote(module: str) -> Placement:
    rest = tuple(m for m in MODULES if m != module)
    return Placement(f"{module}-remote", {"public": rest, module: (module,)}, public="public")


def all_separate() -> Placement:
    processes: dict[str, tuple[str, ...]] = {m: (m,) for m in MODULES}
    processes[GATEWAY] = ()
    return Placement("all-separate", processes, public=GATEWAY, traced=True)


def placements(database: str) -> list[Placement]:
    """The placements of one database case; ``QUARRY_TEST_EVERY_PLACEMENT=1`` runs each module
    remote on both databases (for a machine with cores to spare)."""
    chosen = [all_separate()]
    chosen[0].readme = database == "sqlite" and shutil.which("curl") is not None
    every = os.environ.get("QUARRY_TEST_EVERY_PLACEMENT") == "1"
    chosen += [
        one_remote(m) for m in MODULES if every or (m in ON_POSTGRES) == (database == "postgres")
    ]
    return chosen


# --- processes --------------------------------------------------------------------------------


def start(placement: Placement, tmp_path: Path, env: dict[str, str]) -> None:
    """Start every process of ``placement`` at once (each reaches the others by URL, so the
    order does not matter), then wait until each is ready."""
    ports = {name: free_port() for name in placement.processes}
    url = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    for name, hosted in placement.processes.items():
        remotes = {
            f"QUARRY_REMOTE_{m.upper()}": url[placement.host_of(m)]
            for m in MODULES
            if m not in hosted
        }
        placement.servers[name] = Server(
            tmp_path / placement.name / name,
            port=ports[name],
            args=("--drain-delay", "0"),  # stopped when the flow is done: no load balancer
            env={
                **env,
                **remotes,
                "QUARRY_MODULES": ",".join(hosted) or "none",
                "OTEL_SERVICE_NAME": f"quarry-{name}",
            },
        )
    for server in placement.servers.values():
        server.data_dir.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(len(placement.servers)) as pool:
        for started in [pool.submit(s.start, 180) for s in placement.servers.values()]:
            started.result()


def stop(placement: Placement) -> None:
    with ThreadPoolExecutor(len(placement.servers) or 1) as pool:
        list(pool.map(Server.stop, placement.servers.values()))


# --- the flow ---------------------------------------------------------------------------------


class Traced:
    """Starts a trace for every request a client sends (its ``traceparent``), and keeps each
    request's path and trace id."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str]] = []

    def __call__(self, request: httpx.Request) -> None:
        trace_id = secrets.token_hex(16)
        request.headers["traceparent"] = f"00-{trace_id}-{secrets.token_hex(8)}-01"
        self.requests.append((f"{request.method} {request.url.path}", trace_id))


def flow(client: httpx.Client) -> None:
    """The platform flow, through ``client``."""
    entity_rows = seed(client, "accounts", "account_id", ACCOUNTS)
    spec = {
        "trainer": "logistic_regression",
        "model": "churn",
        "dataset": {
            "feature_service": "churn",
            "entity_rows": entity_rows,
            "label": "accounts:churned",
        },
        "hyperparameters": {"epochs": 30},
        "gate": {"metric": "accuracy", "threshold": 0.6, "promote_to": "champion"},
    }
    submitted = client.post("/v1/training/jobs", json=spec)
    assert submitted.status_code == 202, submitted.text
    job_id = submitted.json()["id"]
    job = eventually(
        lambda: (
            (j := client.get(f"/v1/training/jobs/{job_id}").json())["status"]
            not in ("queued", "running")
            and j
        ),
        "the training job",
    )
    assert job["status"] == "succeeded", job
    assert job["verdict"]["passed"], job  # the gate passed: the version became the champion
    champion = client.get("/v1/registry/models/churn/aliases/champion")
    assert champion.status_code == 200, champion.text
    assert champion.json()["version"] == job["version"]

    answer = client.post(
        "/v1/predict/churn", json={"entities": {"account_id": list(range(ACCOUNTS))}}
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["version"] == job["version"]

    summary = eventually(
        lambda: (
            (s := client.get("/v1/monitoring/models/churn/summary", params={"window": "10m"}))
            .json()
            .get("requests")
            and s.json()
        ),
        "the prediction to reach monitoring",
    )
    assert summary["requests"] >= 1

    def drift_check() -> dict[str, Any] | None:
        checked = client.post("/v1/monitoring/drift/churn", json={"window": "1h", "min_rows": 50})
        assert checked.status_code in (200, 201), checked.text
        report: dict[str, Any] = checked.json()
        return None if report["status"] == "insufficient_data" else report

    report = eventually(drift_check, "the predictions' inputs to reach monitoring")
    assert report["status"] in ("ok", "drift")
    assert report["current_rows"] >= 50
    webhooks = client.get("/v1/notifications/webhooks")
    assert webhooks.status_code == 200, webhooks.text


def run(placement: Placement, tmp_path: Path, env: dict[str, str], receiver: Receiver) -> None:
    try:
        start(placement, tmp_path, env)
        public = placement.servers[placement.public]
        if placement.public == GATEWAY:
            assert f"(a gateway to {', '.join(MODULES)})" in public.log.read_text()
        traced = Traced()
        hooks = {"request": [traced]} if placement.traced else {}
        # Each request may take 50 s (not the 10 s default deadline): the processes of two
        # placements share the machine with the rest of the suite.
        slow = {"quarry-deadline-ms": "50000"}
        with httpx.Client(
            base_url=public.url, timeout=60, headers=slow, event_hooks=hooks
        ) as client:
            rows = {m["name"]: m for m in client.get("/v1/modules").json()["modules"]}
            hosted = placement.processes[placement.public]
            assert {n for n, m in rows.items() if m["placement"] == "local"} == set(hosted)
            assert len(rows) == len(MODULES)
            flow(client)
        if placement.traced:
            check_traces(traced, receiver)
        if placement.readme:
            quick_start(public, tmp_path / placement.name / "readme")
    except BaseException as exc:
        logs = "\n".join(
            f"--- {name}:\n{s.log.read_text()[-2000:]}"
            for name, s in placement.servers.items()
            if s.log.exists()
        )
        raise AssertionError(f"placement {placement.name}: {exc!r}\n{logs}") from exc
    finally:
        stop(placement)


def quick_start(public: Server, work: Path) -> None:
    """The README's quick start blocks, as ``test_readme`` runs them, against ``public``."""
    blocks = [
        code for reason, code in sh_blocks(section(README.read_text(), SECTION)) if not reason
    ]
    work.mkdir(parents=True)
    done = subprocess.run(  # noqa: PLW1510 - the exit status is asserted
        ["bash", "-c", script(blocks, public.url)],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=400,
        env={
            **os.environ,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        },
    )
    assert done.returncode == 0, (
        f"the README's quick start failed against the gateway (exit {done.returncode}):\n"
        f"--- stdout\n{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-3000:]}"
    )


CROSSED = {
    "/v1/features/": {"features"},
    "/v1/training/": {"training"},
    "/v1/registry/": {"registry"},
    "/v1/predict/": {"inference", "features"},  # the vector by entity, from features
    "/v1/monitoring/drift/": {"monitoring", "registry"},  # the reference profile
    "/v1/monitoring/": {"monitoring"},
    "/v1/notifications/": {"notifications"},
}
"""Module processes a request to each path crosses, besides the gateway (first match)."""


def check_traces(traced: Traced, receiver: Receiver) -> None:
    """Each request is one trace: the spans of every process it crosses carry its trace id."""
    expected = []
    for request, trace_id in traced.requests:
        path = request.split(" ", 1)[1]
        crossed = next((m for prefix, m in CROSSED.items() if path.startswith(prefix)), set())
        expected.append((request, trace_id, {f"quarry-{p}" for p in {GATEWAY, *crossed}}))

    def missing() -> list[str]:
        return [
            f"{request}: {sorted(services - receiver.services_in(trace_id))}"
            for request, trace_id, services in expected
            if not services <= receiver.services_in(trace_id)
        ]

    deadline = time.monotonic() + 30  # spans are exported in batches, every 200 ms
    while left := missing():
        assert time.monotonic() < deadline, f"traces without a crossed process's spans: {left}"
        time.sleep(0.1)  # polling the receiver, with a deadline
    assert len(expected) > 10  # every request of the flow, polls included


# --- the test ---------------------------------------------------------------------------------


# One class per database: ``make test`` distributes tests by class (``--dist loadscope``), so the
# two run on separate test processes instead of one after the other.


@pytest.mark.timeout(600)
class EveryPlacement:
    database: str

    def test_the_platform_flow_in_every_placement(
        self,
        tmp_path: Path,
        redis_namespace: str,
        receiver: Receiver,
        request: pytest.FixtureRequest,
    ) -> None:
        every_placement(self.database, tmp_path, redis_namespace, receiver, request)


class TestOnSQLite(EveryPlacement):
    database = "sqlite"


class TestOnPostgreSQL(EveryPlacement):
    database = "postgres"


def every_placement(
    database: str,
    tmp_path: Path,
    redis_namespace: str,
    receiver: Receiver,
    request: pytest.FixtureRequest,
) -> None:
    chosen = placements(database)
    envs = []
    with ExitStack() as schemas:  # each dropped at the end
        for placement in chosen:
            env = {
                "QUARRY_EVENTS_URL": REDIS_URL,
                "QUARRY_REDIS_PREFIX": f"{redis_namespace}-{placement.name}:",
                "QUARRY_SERVICE_TOKEN": TOKEN,
                "QUARRY_PREDICTION_LOG_SAMPLE": "1",
            }
            if placement.traced:
                env |= {
                    "OTEL_TRACES_EXPORTER": "otlp",
                    "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
                    "OTEL_TRACES_SAMPLER": "parentbased_always_on",
                    "OTEL_BSP_SCHEDULE_DELAY": "200",
                }
            if database == "postgres":
                database_url = request.getfixturevalue("postgres_database")
                url = schemas.enter_context(postgres_schema(database_url))
                env |= {f"QUARRY_{m.upper()}_DATABASE_URL": url for m in MODULES}
            envs.append(env)
        at_once = max(2, len(os.sched_getaffinity(0)))
        with ThreadPoolExecutor(min(at_once, len(chosen))) as pool:
            runs = [
                pool.submit(run, p, tmp_path, env, receiver)
                for p, env in zip(chosen, envs, strict=True)
            ]
            failures = [str(e) for r in runs if (e := r.exception()) is not None]
        assert not failures, "\n\n".join(failures)
