"""Extract one Quarry module into its own process: check it, then write its deploy bundle.

    python scripts/extract_service.py inference [--out DIR] [--image quarryml:latest]
    python scripts/extract_service.py gateway [--out DIR] [--port 8000]

Checks (skipped with ``--skip-checks``): the module is one this build knows; ``lint-imports``
passes, so the module reaches the others only through their contracts; the module's contract
tests pass over real HTTP (the ``Test...OverHttp`` classes in ``tests/contract/test_<m>_*.py``).
A module without HTTP contract tests is reported and the extraction goes on: its boundary is
still checked, and its calls travel over the same RPC transport the other modules' tests cover.

The bundle (default ``build/deploy/<module>``): ``module.env`` and ``rest.env``,
``docker-compose.yaml``, ``k8s/`` (Deployment, Service, HorizontalPodAutoscaler), for inference
``prometheus-adapter.yaml`` (the custom metrics its autoscaler reads), and a README.

``gateway`` writes the bundle of a public process that hosts no module (``QUARRY_MODULES=none``)
in front of every module in a process of its own (default ``build/deploy/gateway``):
``gateway.env``, ``docker-compose.yaml`` (Redis, each module, the gateway), ``k8s/`` for the
gateway and a README. Its only check is ``lint-imports``.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import _bundle
import _gateway
import yaml
from _bundle import Bundle
from _gateway import Gateway

ROOT = Path(__file__).resolve().parent.parent
GPU_MODULES = ("inference", "training")
WORKER_MODULES = ("training",)
"""Modules deployed as task workers: their API stays with the rest, their jobs run here."""
GATEWAY = "gateway"
"""The name that writes the gateway's bundle instead of a module's."""


class CheckFailed(Exception):
    """A pre-extraction check failed; the message says which and why."""


# --- what to deploy ---------------------------------------------------------------------------


def _specs() -> dict[str, object]:
    from app.bootstrap import AVAILABLE_MODULES

    return {spec.name: spec for spec in AVAILABLE_MODULES}


def plan(module: str, args: argparse.Namespace) -> Bundle:
    """The bundle for ``module``, from the dependencies and events its spec declares."""
    specs = _specs()
    if module not in specs:
        raise CheckFailed(f"unknown module {module!r}: this build has {', '.join(specs)}")
    spec = specs[module]
    return Bundle(
        module=module,
        image=args.image,
        port=args.port,
        replicas=args.replicas,
        drain_timeout=args.drain_timeout,
        dependencies=tuple(dict.fromkeys(dep.module for dep in spec.requires)),
        event_peers=_event_peers(spec, [s for name, s in specs.items() if name != module]),
        gpu=module in GPU_MODULES,
        worker=module in WORKER_MODULES,
    )


def plan_gateway(args: argparse.Namespace) -> Gateway:
    """The gateway bundle: every module of this build behind one public process."""
    return Gateway(
        modules=tuple(_specs()),
        image=args.image,
        port=args.port or _bundle.MAIN_PORT,
        replicas=args.replicas,
        drain_timeout=args.drain_timeout,
    )


def _event_peers(spec, others) -> tuple[str, ...]:
    def names(types) -> set[str]:
        return {t.__name__ for t in types}

    return tuple(
        other.name
        for other in others
        if names(spec.publishes) & names(other.subscribes)
        or names(other.publishes) & names(spec.subscribes)
    )


# --- checks -----------------------------------------------------------------------------------


def check_boundaries() -> None:
    """``lint-imports`` over the whole project: every module's boundaries hold."""
    print("checking boundaries: lint-imports", flush=True)
    lint = Path(sys.executable).with_name("lint-imports")
    result = _run([str(lint), "--no-cache"])
    if result.returncode != 0:
        raise CheckFailed(
            f"lint-imports failed: the module boundaries do not hold\n{result.stdout}"
        )


def http_contract_tests(module: str) -> list[Path]:
    """Contract test files of ``module`` that have an HTTP transport class (``...OverHttp``)."""
    pattern = re.compile(r"^class Test\w*OverHttp\b", re.MULTILINE)
    files = sorted((ROOT / "tests" / "contract").glob(f"test_{module}_*.py"))
    return [f for f in files if pattern.search(f.read_text())]


def check_contract(module: str) -> None:
    """The module's contract tests against a real ``quarry serve`` hosting it."""
    files = http_contract_tests(module)
    if not files:
        print(
            f"contract tests: {module} has no HTTP contract tests"
            f" (no Test...OverHttp class in tests/contract/test_{module}_*.py); going on",
            flush=True,
        )
        return
    names = [str(f.relative_to(ROOT)) for f in files]
    print(f"checking the contract over HTTP: {' '.join(names)}", flush=True)
    command = [sys.executable, "-m", "pytest", *names, "-k", "OverHttp", "-q"]
    result = _run([*command, "-p", "no:cacheprovider"])
    if result.returncode != 0:
        raise CheckFailed(f"contract tests over HTTP failed\n{result.stdout[-4000:]}")
    print(f"contract tests over HTTP: {result.stdout.strip().splitlines()[-1]}", flush=True)


def _run(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own tools, from this interpreter's environment
        command, cwd=ROOT, capture_output=True, text=True, check=False
    )


# --- writing the bundle -----------------------------------------------------------------------


def write_files(files: dict[str, str], out: Path) -> list[Path]:
    written = []
    for name, text in files.items():
        path = out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    return written


def write_gateway(gateway: Gateway, out: Path, *, checked: bool) -> list[Path]:
    """Write every file of the gateway bundle under ``out``; answer the paths written."""
    files = {
        "gateway.env": _gateway.gateway_env(gateway),
        "docker-compose.yaml": _yaml(_gateway.compose(gateway)),
        "README.md": _gateway.readme(gateway, checked=checked),
    }
    files |= {f"k8s/{name}": _yaml(doc) for name, doc in _gateway.manifests(gateway).items()}
    return write_files(files, out)


def write_bundle(bundle: Bundle, out: Path, *, checked: bool) -> list[Path]:
    """Write every file of the bundle under ``out``; answer the paths written."""
    files: dict[str, str] = {
        "module.env": _bundle.module_env(bundle),
        "rest.env": _bundle.rest_env(bundle),
        "docker-compose.yaml": _yaml(_bundle.compose(bundle)),
        "README.md": readme(bundle, checked=checked),
    }
    for name, manifest in _bundle.manifests(bundle).items():
        files[f"k8s/{name}"] = _yaml(manifest)
    if bundle.module == "inference":
        files["prometheus-adapter.yaml"] = _yaml(_bundle.prometheus_adapter_rules(bundle))
    return write_files(files, out)


class _Dumper(yaml.SafeDumper):
    """Writes shared values out in full: no ``&id001`` anchors in files people read."""

    def ignore_aliases(self, data: object) -> bool:
        return True


def _yaml(document: dict[str, object]) -> str:
    return yaml.dump(document, Dumper=_Dumper, sort_keys=False, default_flow_style=False)


def readme(bundle: Bundle, *, checked: bool) -> str:
    """The bundle's README: how to start the module in its own process, three ways."""
    m, name = bundle.module, bundle.name
    run = " ".join(bundle.command)
    checks = (
        "`lint-imports` passed and the module's HTTP contract tests passed"
        if checked
        else "none (written with `--skip-checks`)"
    )
    services = "Redis, PostgreSQL" if bundle.worker else "Redis"
    stage = {"inference": "inference-gpu", "training": "training"}.get(m, "serve-cpu")
    return f"""# Quarry: {m} in its own process

Written by `scripts/extract_service.py {m}`. Checks run before writing: {checks}.

| file | what |
|---|---|
| `module.env` | environment of the {m} process |
| `rest.env` | environment of the process hosting every other module (`{_bundle.MAIN_HOST}`) |
| `docker-compose.yaml` | {services}, `{name}` and `{_bundle.MAIN_HOST}` |
| `k8s/` | {", ".join(sorted(_bundle.manifests(bundle)))} for `{name}` |

{_topology(bundle)}

Replace every `change-me` (the service token both sides share, database passwords) first.

## Run it as a plain process

### The {m} process

```sh
set -a; . ./module.env; set +a
{run}
```

{_plain_notes(bundle)}

### The rest of the platform

```sh
set -a; . ./rest.env; set +a
quarry serve --host 0.0.0.0 --port {_bundle.MAIN_PORT}
```

`{_bundle.MAIN_HOST}` in `module.env`{"" if bundle.worker else f" and `{name}` in `rest.env`"} must
resolve to the hosts running these processes (or edit the URLs).

## Docker compose

Build the images from the repository root, then start the bundle:

```sh
docker build --target {stage} -t {bundle.image} .
docker compose up -d
```

{_kubernetes(bundle)}
"""


def _plain_notes(bundle: Bundle) -> str:
    if bundle.worker:
        return (
            "`quarry worker` needs the Redis broker and the PostgreSQL job table named in\n"
            "`module.env` (the same ones as in `rest.env`): fill them in first."
        )
    return (
        "As written, `module.env` leaves the backing services commented out, so this starts and\n"
        "serves on embedded defaults (SQLite, in-process queue and events); uncomment the lines\n"
        "it names (Redis events, PostgreSQL, S3) before the rest of the platform joins."
    )


def _topology(bundle: Bundle) -> str:
    m = bundle.module
    if bundle.worker:
        return (
            f"The {m} API and its job table stay with the rest of the platform; `{bundle.name}`"
            f" runs `quarry worker` processes that take {m} jobs from the Redis broker and"
            f" share the job table (PostgreSQL). Workers have no HTTP port: no Service and no"
            f" HTTP probes. A crashed worker exits and is restarted; a hung job stops its"
            f" heartbeat and is re-run elsewhere after `QUARRY_TRAINING_STALE_S`."
        )
    text = (
        f"`{bundle.name}` serves {m} on port {bundle.port}; the rest of the platform calls it"
        f" through `QUARRY_REMOTE_{m.upper()}={bundle.url}` with the shared service token."
    )
    if bundle.event_peers:
        text += (
            f" {m} exchanges domain events with {', '.join(bundle.event_peers)}: both processes"
            " need `QUARRY_EVENTS_URL=redis://...` (the compose file and the manifests set it)."
        )
    return text


def _kubernetes(bundle: Bundle) -> str:
    gpu = (
        "\nThe pods ask for `nvidia.com/gpu: 1`, select nodes labelled"
        " `nvidia.com/gpu.present=true` (set by the NVIDIA GPU operator) and tolerate the"
        " `nvidia.com/gpu` NoSchedule taint that keeps other pods off GPU nodes:\n\n"
        "```sh\nkubectl taint nodes GPU_NODE nvidia.com/gpu=present:NoSchedule\n```\n"
        if bundle.gpu
        else ""
    )
    database = "required: the job table is shared" if bundle.worker else "optional: else SQLite"
    if bundle.worker:
        probes = "Workers have no HTTP port, so no HTTP probes: a dead worker exits and restarts."
        drain = "the worker finishes or gives back its current messages"
    else:
        probes = "Readiness is `/readyz`, liveness `/healthz` (startup: `/healthz`)."
        drain = f"drains requests for up to {bundle.drain_timeout} s (`--drain-timeout`)"
    return f"""## Kubernetes

```sh
kubectl create secret generic {_bundle.TOKEN_SECRET} --from-literal=token=YOUR_TOKEN
kubectl create secret generic {_bundle.DATABASE_SECRET} \\
  --from-literal={bundle.module}-url=postgresql://...   # {database}
kubectl apply -f k8s/
```

The rest of the platform runs as Service `{_bundle.MAIN_HOST}` (port {_bundle.MAIN_PORT}) with
`rest.env`'s settings, and Redis as Service `redis`. {probes}
On shutdown a pod waits {_bundle.PRE_STOP_S} s (preStop), then {drain};
`terminationGracePeriodSeconds` is {bundle.grace_period}, above both. The autoscaler keeps
{bundle.replicas} to {bundle.replicas * 4} replicas at 70% CPU.{_scaling_signals(bundle)}
{gpu}"""


def _scaling_signals(bundle: Bundle) -> str:
    if bundle.module != "inference":
        return ""
    targets = ", ".join(f"`{name}` {value}" for name, value in _bundle.SCALING_SIGNALS.items())
    return f"""
It also scales on inference's own signals, averaged per pod ({targets}): pods are annotated
for Prometheus to scrape `/metrics`, and the custom metrics API serves the signals through the
Prometheus adapter, configured by `prometheus-adapter.yaml`:

```sh
helm install prometheus-adapter prometheus-community/prometheus-adapter \\
  --set prometheus.url=http://prometheus.monitoring.svc -f prometheus-adapter.yaml
```

Prometheus needs a key with the `read` scope (`Authorization: Bearer ...` in its scrape config),
or `QUARRY_METRICS_AUTH=off` where only the cluster reaches the pods."""


# --- command line -----------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "module", help="the module to extract, e.g. inference; or gateway: no module, every route"
    )
    parser.add_argument("--out", type=Path, help="bundle folder (default build/deploy/<module>)")
    parser.add_argument("--skip-checks", action="store_true", help="write without checking")
    parser.add_argument("--drain-timeout", type=int, default=15, help="seconds (default 15)")
    parser.add_argument("--image", default="quarryml:latest", help="container image")
    parser.add_argument("--replicas", type=int, default=1, help="minimum replicas (default 1)")
    parser.add_argument(
        "--port", type=int, help="the module's port (default 8001; the gateway's 8000)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.module == GATEWAY:
        return main_gateway(args)
    args.port = args.port or 8001
    try:
        bundle = plan(args.module, args)
        if not args.skip_checks:
            check_boundaries()
            check_contract(args.module)
    except CheckFailed as exc:
        print(f"extract_service: {exc}", file=sys.stderr)
        return 1
    out = args.out or ROOT / "build" / "deploy" / args.module
    for path in write_bundle(bundle, out, checked=not args.skip_checks):
        print(f"wrote {path}")
    return 0


def main_gateway(args: argparse.Namespace) -> int:
    gateway = plan_gateway(args)
    try:
        if not args.skip_checks:
            check_boundaries()  # the gateway hosts no module: no contract to check
    except CheckFailed as exc:
        print(f"extract_service: {exc}", file=sys.stderr)
        return 1
    out = args.out or ROOT / "build" / "deploy" / GATEWAY
    for path in write_gateway(gateway, out, checked=not args.skip_checks):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
