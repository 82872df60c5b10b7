"""scripts/extract_service.py: its deploy bundle, validated offline, and its README followed."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes.server import QUARRY, free_port

yaml = pytest.importorskip("yaml")
kubernetes_validate = pytest.importorskip("kubernetes_validate")

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "extract_service.py"
KUBERNETES_VERSION = "1.30.0"
DRAIN_TIMEOUT = 20
GPU_MODULES = ("inference", "training")


def extract(module: str, out: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), module, "--out", str(out), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        check=False,
    )


@pytest.fixture(scope="module", params=GPU_MODULES)
def bundle(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp(f"bundle-{request.param}")
    result = extract(
        request.param,
        out,
        "--skip-checks",
        "--drain-timeout",
        str(DRAIN_TIMEOUT),
        "--image",
        "registry.example/quarryml:1.0",
        "--replicas",
        "2",
    )
    assert result.returncode == 0, result.stderr
    return out


def manifests(bundle: Path) -> dict[str, dict[str, Any]]:
    documents = [
        doc
        for path in sorted((bundle / "k8s").glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
    ]
    return {doc["kind"]: doc for doc in documents}


def env_file(path: Path) -> tuple[dict[str, str], dict[str, str]]:
    """(active, commented-out) assignments of an env file."""
    active, commented = {}, {}
    for line in path.read_text().splitlines():
        if match := re.fullmatch(r"(#\s*)?(QUARRY_\w+)=(\S+)", line.strip()):
            (commented if match[1] else active)[match[2]] = match[3]
    return active, commented


def module_of(bundle: Path) -> str:
    return bundle.name.split("-")[1].rstrip("0123456789")


def container(bundle: Path) -> dict[str, Any]:
    return manifests(bundle)["Deployment"]["spec"]["template"]["spec"]["containers"][0]


# --- the files ----------------------------------------------------------------------------------


def test_every_manifest_is_valid_kubernetes(bundle: Path) -> None:
    docs = manifests(bundle)
    expected = {"Deployment", "HorizontalPodAutoscaler"}
    if module_of(bundle) == "inference":
        expected.add("Service")
    assert set(docs) == expected
    for doc in docs.values():
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_every_yaml_file_parses(bundle: Path) -> None:
    for path in bundle.rglob("*.yaml"):
        assert yaml.safe_load(path.read_text()), path


def test_gpu_modules_ask_for_a_gpu_node_and_tolerate_its_taint(bundle: Path) -> None:
    pod = manifests(bundle)["Deployment"]["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert pod["containers"][0]["resources"]["requests"]["cpu"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]


def test_pods_outlive_the_drain_timeout_and_read_the_token_from_a_secret(bundle: Path) -> None:
    deployment = manifests(bundle)["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] > DRAIN_TIMEOUT
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert deployment["spec"]["replicas"] == 2
    env = {e["name"]: e for e in container(bundle)["env"]}
    assert "value" not in env["QUARRY_SERVICE_TOKEN"]
    assert env["QUARRY_SERVICE_TOKEN"]["valueFrom"]["secretKeyRef"]["name"]
    assert env["QUARRY_REMOTE_REGISTRY"]["value"] == "http://quarry-main:8000"
    assert container(bundle)["image"] == "registry.example/quarryml:1.0"


def test_the_autoscaler_scales_the_deployment_on_cpu(bundle: Path) -> None:
    docs = manifests(bundle)
    hpa = docs["HorizontalPodAutoscaler"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"]["kind"] == "Deployment"
    assert hpa["spec"]["scaleTargetRef"]["name"] == docs["Deployment"]["metadata"]["name"]
    assert hpa["spec"]["minReplicas"] == 2
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"


def test_inference_also_scales_on_its_queue_and_requests_in_flight(bundle: Path) -> None:
    docs = manifests(bundle)
    if module_of(bundle) != "inference":  # the other modules have no such signals: CPU only
        assert len(docs["HorizontalPodAutoscaler"]["spec"]["metrics"]) == 1
        assert not (bundle / "prometheus-adapter.yaml").exists()
        return
    pods = [m["pods"] for m in docs["HorizontalPodAutoscaler"]["spec"]["metrics"][1:]]
    scaled_on = {p["metric"]["name"]: p["target"]["averageValue"] for p in pods}
    assert set(scaled_on) == {"quarry_inference_requests_in_flight", "quarry_inference_queue_rows"}
    annotations = docs["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    adapter = yaml.safe_load((bundle / "prometheus-adapter.yaml").read_text())
    served = {rule["name"]["as"] for rule in adapter["rules"]["custom"]}
    assert served == set(scaled_on)


def test_the_compose_file_runs_the_module_next_to_the_rest(bundle: Path) -> None:
    module = module_of(bundle)
    compose = yaml.safe_load((bundle / "docker-compose.yaml").read_text())
    service = compose["services"][f"quarry-{module}"]
    assert {"redis", "quarry-main"} <= set(compose["services"])
    assert service["env_file"] == ["module.env"]
    assert compose["services"]["quarry-main"]["env_file"] == ["rest.env"]
    devices = service["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]
    assert int(service["stop_grace_period"].rstrip("s")) > DRAIN_TIMEOUT


def test_the_readme_explains_each_way_to_start_the_module(bundle: Path) -> None:
    text = (bundle / "README.md").read_text()
    for step in ("docker compose up", "kubectl apply -f k8s/", ". ./module.env", ". ./rest.env"):
        assert step in text


# --- per module -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def inference_bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    port = free_port()
    out = tmp_path_factory.mktemp("inference-readme")
    result = extract("inference", out, "--skip-checks", "--port", str(port))
    assert result.returncode == 0, result.stderr
    return out, port


def test_inference_serves_over_http_with_probes(inference_bundle: tuple[Path, int]) -> None:
    bundle, port = inference_bundle
    served = container(bundle)
    assert served["args"][:3] == ["serve", "--modules", "inference"]
    assert served["args"][served["args"].index("--port") + 1] == str(port)
    assert served["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert served["livenessProbe"]["httpGet"]["path"] == "/healthz"
    service = manifests(bundle)["Service"]
    assert service["spec"]["ports"][0]["port"] == port
    assert (
        service["spec"]["selector"]
        == manifests(bundle)["Deployment"]["spec"]["selector"]["matchLabels"]
    )


def test_inference_env_files_wire_both_sides(inference_bundle: tuple[Path, int]) -> None:
    bundle, port = inference_bundle
    active, commented = env_file(bundle / "module.env")
    assert active["QUARRY_MODULES"] == "inference"
    assert active["QUARRY_SERVICE_TOKEN"] == "change-me"
    assert active["QUARRY_REMOTE_REGISTRY"] == "http://quarry-main:8000"
    assert commented["QUARRY_INFERENCE_DATABASE_URL"].startswith("postgresql://")
    assert commented["QUARRY_BROKER_URL"].startswith("redis://")
    assert commented["QUARRY_EVENTS_URL"].startswith("redis://")
    assert commented["QUARRY_ARTIFACTS_URL"].startswith("s3://")
    rest, _ = env_file(bundle / "rest.env")
    assert rest["QUARRY_REMOTE_INFERENCE"] == f"http://quarry-inference:{port}"
    assert rest["QUARRY_SERVICE_TOKEN"] == active["QUARRY_SERVICE_TOKEN"]
    # Registry publishes events inference subscribes to: the rest cannot start on memory://.
    assert rest["QUARRY_EVENTS_URL"].startswith("redis://")


def test_training_runs_as_a_worker_without_a_service(tmp_path: Path) -> None:
    result = extract("training", tmp_path, "--skip-checks")
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "k8s" / "service.yaml").exists()
    worker = container(tmp_path)
    assert worker["args"] == ["worker", "--modules", "training", "--queues", "training"]
    assert "readinessProbe" not in worker
    active, _ = env_file(tmp_path / "module.env")
    assert active["QUARRY_BROKER_URL"].startswith("redis://")
    assert active["QUARRY_TRAINING_DATABASE_URL"].startswith("postgresql://")
    rest, _ = env_file(tmp_path / "rest.env")
    assert "QUARRY_REMOTE_TRAINING" not in rest
    assert rest["QUARRY_TRAINING_DATABASE_URL"] == active["QUARRY_TRAINING_DATABASE_URL"]


def test_an_unknown_module_is_refused_by_name(tmp_path: Path) -> None:
    result = extract("billing", tmp_path, "--skip-checks")
    assert result.returncode == 1
    assert "unknown module 'billing'" in result.stderr
    assert not any(tmp_path.iterdir())


# --- following the README -------------------------------------------------------------------------


def readme_block(readme: str, heading: str) -> str:
    section = readme.split(heading, 1)[1]
    return re.search(r"```sh\n(.*?)```", section, re.DOTALL)[1]


@pytest.mark.slow
def test_following_the_readme_starts_inference_in_its_own_process(
    inference_bundle: tuple[Path, int],
) -> None:
    bundle, port = inference_bundle
    script = readme_block((bundle / "README.md").read_text(), "### The inference process")
    env = {**os.environ, "PATH": f"{QUARRY.parent}{os.pathsep}{os.environ['PATH']}"}
    log = bundle / "inference.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            ["bash", "-c", script],
            cwd=bundle,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        assert wait_ready(f"http://127.0.0.1:{port}/readyz", process), log.read_text()[-3000:]
        answer = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).json()
        assert answer["modules"] == {"inference": True}
        assert httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=5).status_code == 200
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def wait_ready(url: str, process: subprocess.Popen, timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return True
        except httpx.TransportError:
            pass
        time.sleep(0.2)  # polling a condition with a deadline
    return False


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_without_skip_checks_the_boundaries_and_http_contract_are_checked(tmp_path: Path) -> None:
    result = extract("registry", tmp_path, timeout=540)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "lint-imports" in result.stdout
    assert "tests/contract/test_registry_transports.py" in result.stdout
    assert re.search(r"contract tests over HTTP: \d+ passed", result.stdout)
    readme = (tmp_path / "README.md").read_text()
    assert "`lint-imports` passed and the module's HTTP contract tests passed" in readme
    assert (tmp_path / "k8s" / "service.yaml").exists()


# --- the gateway ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gateway_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gateway")
    result = extract("gateway", out, "--skip-checks", "--drain-timeout", str(DRAIN_TIMEOUT))
    assert result.returncode == 0, result.stderr
    return out


def test_the_gateway_bundle_is_valid_kubernetes_and_serves_every_module(
    gateway_bundle: Path,
) -> None:
    from app.bootstrap import AVAILABLE_MODULES

    docs = manifests(gateway_bundle)
    assert set(docs) == {"Deployment", "Service", "HorizontalPodAutoscaler"}
    for doc in docs.values():
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    served = container(gateway_bundle)
    assert served["args"][:3] == ["serve", "--modules", "none"]
    assert "nvidia.com/gpu" not in served["resources"]["limits"]
    assert served["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert docs["Service"]["metadata"]["name"] == "quarry-main"  # what module bundles call
    assert docs["Deployment"]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > (
        DRAIN_TIMEOUT
    )
    env = {e["name"]: e for e in served["env"]}
    assert env["QUARRY_MODULES"]["value"] == "none"
    assert "value" not in env["QUARRY_SERVICE_TOKEN"]
    modules = [spec.name for spec in AVAILABLE_MODULES]
    for module in modules:
        assert env[f"QUARRY_REMOTE_{module.upper()}"]["value"] == f"http://quarry-{module}:8001"

    compose = yaml.safe_load((gateway_bundle / "docker-compose.yaml").read_text())
    assert set(compose["services"]) == {"redis", "quarry-main", *(f"quarry-{m}" for m in modules)}
    for module in modules:
        process = compose["services"][f"quarry-{module}"]
        assert process["command"][:3] == ["serve", "--modules", module]
        assert process["environment"]["QUARRY_EVENTS_URL"].startswith("redis://")
        assert f"QUARRY_REMOTE_{module.upper()}" not in process["environment"]
    text = (gateway_bundle / "README.md").read_text()
    for step in ("docker compose up", "kubectl apply -f k8s/", ". ./gateway.env"):
        assert step in text


def test_the_gateway_env_file_starts_a_gateway(gateway_bundle: Path) -> None:
    from app.bootstrap import AVAILABLE_MODULES, Platform, configure
    from app.kernel.settings import load_settings

    active, _ = env_file(gateway_bundle / "gateway.env")
    settings = configure(load_settings({**active, "QUARRY_DATA_DIR": str(gateway_bundle / "d")}))
    platform = Platform(settings)  # checks the placement; connects to nothing yet
    assert platform.hosted == []
    assert set(platform.remotes) == {spec.name for spec in AVAILABLE_MODULES}
    assert {row.placement for row in platform.module_statuses()} == {"remote"}
