"""The files of a gateway bundle: a public process hosting no module (``QUARRY_MODULES=none``)
in front of every module in a process of its own.

Pure functions of a :class:`Gateway`, like :mod:`_bundle` for one module; ``extract_service.py
gateway`` writes them. The gateway runs as ``quarry-main`` (:data:`_bundle.MAIN_HOST`), the name
every module bundle calls the rest of the platform by, so module bundles written for the same
cluster reach their dependencies through it (it relays RPC too) unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from _bundle import (
    DATA_DIR,
    GRACE_MARGIN_S,
    MAIN_HOST,
    PLACEHOLDER_TOKEN,
    PRE_STOP_S,
    REDIS_URL,
    TOKEN_SECRET,
)

MODULE_PORT = 8001
"""The port of each module's process (``quarry-<module>``), as module bundles default it."""
COMPONENT = "gateway"


@dataclass(frozen=True, kw_only=True)
class Gateway:
    """What to deploy: the gateway, and each module ``quarry serve``-d in a process of its own."""

    modules: tuple[str, ...]
    """Every module of the build, each served at ``http://quarry-<module>:8001``."""
    image: str
    port: int
    replicas: int
    drain_timeout: int

    name = MAIN_HOST

    def url_of(self, module: str) -> str:
        return f"http://quarry-{module}:{MODULE_PORT}"

    @property
    def grace_period(self) -> int:
        return PRE_STOP_S + self.drain_timeout + GRACE_MARGIN_S

    @property
    def command(self) -> list[str]:
        return [
            "quarry", "serve", "--modules", "none", "--host", "0.0.0.0",  # noqa: S104
            "--port", str(self.port), "--drain-timeout", str(self.drain_timeout),
        ]  # fmt: skip

    def remotes(self) -> dict[str, str]:
        return {f"QUARRY_REMOTE_{m.upper()}": self.url_of(m) for m in self.modules}


def gateway_env(gateway: Gateway) -> str:
    """``gateway.env``: the gateway's environment."""
    lines = [
        "# Quarry: a gateway hosting no module, serving every module's routes through its",
        "# contract. Source it before starting the gateway:",
        f"#   {' '.join(gateway.command)}",
        "QUARRY_MODULES=none",
        "QUARRY_HOST=0.0.0.0",
        f"QUARRY_PORT={gateway.port}",
        f"QUARRY_SERVICE_TOKEN={PLACEHOLDER_TOKEN}",
        "",
        "# Where each module runs (`quarry serve --modules <module>`, one process each).",
        *(f"{variable}={url}" for variable, url in gateway.remotes().items()),
        "",
    ]
    return "\n".join(lines)


def module_env(gateway: Gateway, module: str) -> dict[str, str]:
    """The environment of ``module``'s process beside the gateway: it reaches every other
    module directly, and exchanges events over Redis Streams."""
    return {
        "QUARRY_MODULES": module,
        "QUARRY_SERVICE_TOKEN": PLACEHOLDER_TOKEN,
        "QUARRY_EVENTS_URL": REDIS_URL,
        **{
            v: url for v, url in gateway.remotes().items() if v != f"QUARRY_REMOTE_{module.upper()}"
        },
    }


def compose(gateway: Gateway) -> dict[str, Any]:
    """``docker-compose.yaml``: Redis, every module in a process of its own, and the gateway."""
    services: dict[str, Any] = {
        "redis": {
            "image": "redis:7-alpine",
            "command": ["redis-server", "--appendonly", "yes"],
            "volumes": ["redis-data:/data"],
        }
    }
    volumes: dict[str, Any] = {"redis-data": {}}
    for module in gateway.modules:
        services[f"quarry-{module}"] = {
            "image": gateway.image,
            "command": [
                "serve",
                "--modules",
                module,
                "--host",
                "0.0.0.0",  # noqa: S104
                "--port",
                str(MODULE_PORT),
                "--drain-timeout",
                str(gateway.drain_timeout),
            ],
            "environment": module_env(gateway, module),
            "volumes": [f"{module}-data:{DATA_DIR}"],
            "depends_on": ["redis"],
            "stop_grace_period": f"{gateway.grace_period}s",
        }
        volumes[f"{module}-data"] = {}
    services[gateway.name] = {
        "image": gateway.image,
        "command": gateway.command[1:],  # the image's entrypoint is `quarry`
        "env_file": ["gateway.env"],
        "ports": [f"{gateway.port}:{gateway.port}"],
        "depends_on": [f"quarry-{m}" for m in gateway.modules],
        "stop_grace_period": f"{gateway.grace_period}s",
    }
    return {"name": "quarry-gateway", "services": services, "volumes": volumes}


# --- Kubernetes -------------------------------------------------------------------------------


def _labels() -> dict[str, str]:
    return {"app.kubernetes.io/name": "quarry", "app.kubernetes.io/component": COMPONENT}


def _metadata(gateway: Gateway) -> dict[str, Any]:
    return {"name": gateway.name, "labels": _labels()}


def deployment(gateway: Gateway) -> dict[str, Any]:
    """The gateway's Deployment: no GPU, no volume, probes on ``/healthz`` and ``/readyz``."""

    def probe(path: str, period: int, failures: int) -> dict[str, Any]:
        return {
            "httpGet": {"path": path, "port": "http"},
            "periodSeconds": period,
            "failureThreshold": failures,
        }

    env = [
        {"name": "QUARRY_MODULES", "value": "none"},
        {
            "name": "QUARRY_SERVICE_TOKEN",
            "valueFrom": {"secretKeyRef": {"name": TOKEN_SECRET, "key": "token"}},
        },
        *({"name": v, "value": url} for v, url in gateway.remotes().items()),
    ]
    container = {
        "name": COMPONENT,
        "image": gateway.image,
        "command": gateway.command[:1],
        "args": gateway.command[1:],
        "env": env,
        "ports": [{"name": "http", "containerPort": gateway.port}],
        "resources": {
            "requests": {"cpu": "250m", "memory": "256Mi"},
            "limits": {"cpu": "1", "memory": "1Gi"},
        },
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(PRE_STOP_S)]}}},
        "startupProbe": probe("/healthz", 5, 60),
        "livenessProbe": probe("/healthz", 10, 3),
        "readinessProbe": probe("/readyz", 5, 3),
    }
    pod = {
        "terminationGracePeriodSeconds": gateway.grace_period,
        "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "fsGroup": 10001},
        "containers": [container],
    }
    metadata = {
        "labels": _labels(),
        "annotations": {
            "prometheus.io/scrape": "true",
            "prometheus.io/port": str(gateway.port),
            "prometheus.io/path": "/metrics",
        },
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(gateway),
        "spec": {
            "replicas": gateway.replicas,
            "selector": {"matchLabels": _labels()},
            "template": {"metadata": metadata, "spec": pod},
        },
    }


def service(gateway: Gateway) -> dict[str, Any]:
    """The gateway's Service: the public API, and the name module bundles call the rest by."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(gateway),
        "spec": {
            "type": "ClusterIP",
            "selector": _labels(),
            "ports": [{"name": "http", "port": gateway.port, "targetPort": "http"}],
        },
    }


def autoscaler(gateway: Gateway) -> dict[str, Any]:
    """CPU-based autoscaling: the gateway holds no state, so any number of replicas serve."""
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _metadata(gateway),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": gateway.name},
            "minReplicas": gateway.replicas,
            "maxReplicas": gateway.replicas * 4,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": 70},
                    },
                }
            ],
        },
    }


def manifests(gateway: Gateway) -> dict[str, dict[str, Any]]:
    """Kubernetes manifests of the gateway by file name."""
    return {
        "deployment.yaml": deployment(gateway),
        "service.yaml": service(gateway),
        "hpa.yaml": autoscaler(gateway),
    }


def readme(gateway: Gateway, *, checked: bool) -> str:
    """The bundle's README: what the gateway is, and how to start it three ways."""
    checks = "`lint-imports` passed" if checked else "none (written with `--skip-checks`)"
    remotes = "\n".join(f"{v}={url}" for v, url in gateway.remotes().items())
    modules = ", ".join(f"`quarry-{m}`" for m in gateway.modules)
    return f"""# Quarry: a gateway in front of every module

Written by `scripts/extract_service.py gateway`. Checks run before writing: {checks}.

The gateway (`QUARRY_MODULES=none`) hosts no module: it serves every public route of every
module by calling the module's process through its contract, and the console (`/ui`),
`/metrics`, `/v1/modules` and the probes. It keeps no state, so it scales out freely. Each
module runs in a process of its own, `quarry serve --modules <module>` on port {MODULE_PORT}
({modules}); those exchange domain events over Redis Streams.

`/readyz` on the gateway answers 200 while it reaches every module's process (each one's
`/healthz`, checked every 5 s, every second while one is down), and 503 naming the
`<module>.remote` it cannot reach otherwise; `/v1/modules` shows each module's URL and circuit
breaker. A route of a module the gateway has no URL for answers 503 `unavailable` naming it.

| file | what |
|---|---|
| `gateway.env` | environment of the gateway |
| `docker-compose.yaml` | Redis, one process per module, and the gateway `{gateway.name}` |
| `k8s/` | {", ".join(sorted(manifests(gateway)))} for the gateway |

Replace every `change-me` (the service token every process shares) first.

## Run it as a plain process

Start each module's process first (on the hosts the URLs name), then:

```sh
set -a; . ./gateway.env; set +a
{" ".join(gateway.command)}
```

`gateway.env` names each module's process:

```sh
{remotes}
```

## Docker compose

Build the image from the repository root (the `training` stage holds every module's
dependencies; the gateway alone needs only `serve-cpu`), then start the bundle:

```sh
docker build --target training -t {gateway.image} .
docker compose up -d
```

## Kubernetes

```sh
kubectl create secret generic {TOKEN_SECRET} --from-literal=token=YOUR_TOKEN
kubectl apply -f k8s/
```

The gateway runs as Service `{gateway.name}` (port {gateway.port}): module bundles written by
`scripts/extract_service.py <module>` call the rest of the platform by that name, so they reach
their dependencies through the gateway, which relays RPC (or point their `QUARRY_REMOTE_<M>` at
each other's Services to save the hop). Each module needs a Service `quarry-<module>` on port
{MODULE_PORT} (the module bundles write one), and Redis as Service `redis` for events.
Readiness is `/readyz`, liveness `/healthz`. On shutdown a pod waits {PRE_STOP_S} s (preStop),
then drains requests for up to {gateway.drain_timeout} s; `terminationGracePeriodSeconds` is
{gateway.grace_period}. The autoscaler keeps {gateway.replicas} to {gateway.replicas * 4}
replicas at 70% CPU.
"""
