"""The files of a deploy bundle for one extracted module: env files, compose, Kubernetes.

Everything here is a pure function of a :class:`Bundle`; ``extract_service.py`` decides what the
bundle is (from the module specs) and writes the files.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MAIN_HOST = "quarry-main"
"""Compose service and Kubernetes Service name of the process hosting every other module."""
MAIN_PORT = 8000
TOKEN_SECRET = "quarry-service-token"  # noqa: S105 - the Secret's name, not its value
DATABASE_SECRET = "quarry-database"  # noqa: S105 - a Secret's name
PLACEHOLDER_TOKEN = "change-me"  # noqa: S105 - a placeholder the README says to replace
REDIS_URL = "redis://redis:6379/0"
PRE_STOP_S = 5
"""Seconds a pod keeps serving after it is told to stop, while endpoints stop routing to it."""
GRACE_MARGIN_S = 10
DATA_DIR = "/data"
SCALING_SIGNALS = {
    "quarry_inference_requests_in_flight": "16",
    "quarry_inference_queue_rows": "64",
}
"""Custom metrics the inference autoscaler adds to CPU, with their target average per pod:
predictions in flight (16), and rows waiting to run (64, one full batch at the default
``max_batch_size``). Read through the Prometheus adapter (:func:`prometheus_adapter_rules`)."""

_RESOURCES = {
    "cpu": {
        "requests": {"cpu": "500m", "memory": "512Mi"},
        "limits": {"cpu": "2", "memory": "2Gi"},
    },
    "inference": {
        "requests": {"cpu": "1", "memory": "4Gi"},
        "limits": {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": 1},
    },
    "training": {
        "requests": {"cpu": "2", "memory": "8Gi"},
        "limits": {"cpu": "8", "memory": "32Gi", "nvidia.com/gpu": 1},
    },
}


@dataclass(frozen=True, kw_only=True)
class Bundle:
    """What to deploy: one module in its own process, the rest of the platform elsewhere."""

    module: str
    image: str
    port: int
    replicas: int
    drain_timeout: int
    dependencies: tuple[str, ...]
    """Modules this one calls (required or optional); the rest of the platform hosts them."""
    event_peers: tuple[str, ...]
    """Modules of the rest that exchange domain events with this one."""
    gpu: bool
    worker: bool
    """Runs ``quarry worker`` (task queue consumer) instead of ``quarry serve``."""

    @property
    def name(self) -> str:
        return f"quarry-{self.module}"

    @property
    def url(self) -> str:
        return f"http://{self.name}:{self.port}"

    @property
    def grace_period(self) -> int:
        """Above the drain timeout: the preStop pause, then the drain, then a margin."""
        return PRE_STOP_S + self.drain_timeout + GRACE_MARGIN_S

    @property
    def database_variable(self) -> str:
        return f"QUARRY_{self.module.upper()}_DATABASE_URL"

    @property
    def database_url(self) -> str:
        return f"postgresql://quarry:{PLACEHOLDER_TOKEN}@postgres:5432/quarry_{self.module}"

    @property
    def command(self) -> list[str]:
        if self.worker:
            return ["quarry", "worker", "--modules", self.module, "--queues", self.module]
        return [
            "quarry", "serve", "--modules", self.module, "--host", "0.0.0.0",  # noqa: S104
            "--port", str(self.port), "--drain-timeout", str(self.drain_timeout),
        ]  # fmt: skip


# --- env files --------------------------------------------------------------------------------


def module_env(bundle: Bundle) -> str:
    """``module.env``: the environment of the module's own process."""
    lines = [
        f"# Quarry: the {bundle.module} module in its own process.",
        f"# Source it before `{' '.join(bundle.command)}` (see README.md).",
        f"QUARRY_MODULES={bundle.module}",
    ]
    if not bundle.worker:
        lines += ["QUARRY_HOST=0.0.0.0", f"QUARRY_PORT={bundle.port}"]
    lines += [f"QUARRY_SERVICE_TOKEN={PLACEHOLDER_TOKEN}", ""]
    if bundle.dependencies:
        lines.append(f"# Modules {bundle.module} calls, hosted by the rest of the platform.")
        lines += [
            f"QUARRY_REMOTE_{m.upper()}=http://{MAIN_HOST}:{MAIN_PORT}" for m in bundle.dependencies
        ]
        lines.append("")
    return "\n".join(lines + _backing_lines(bundle, rest=False)) + "\n"


def rest_env(bundle: Bundle) -> str:
    """``rest.env``: what the process hosting every other module needs to reach this one."""
    lines = [
        f"# Quarry: every module but {bundle.module}, which runs in its own process.",
        f"QUARRY_SERVICE_TOKEN={PLACEHOLDER_TOKEN}",
    ]
    if bundle.worker:
        lines += [
            f"# {bundle.module} stays hosted here (its API and job table); its jobs run on",
            "# `quarry worker` processes that take them from the Redis broker.",
        ]
    else:
        lines.append(f"QUARRY_REMOTE_{bundle.module.upper()}={bundle.url}")
    lines.append("")
    return "\n".join(lines + _backing_lines(bundle, rest=True)) + "\n"


def _backing_lines(bundle: Bundle, *, rest: bool) -> list[str]:
    """Backing services: active where the process cannot start without them, else commented."""
    if bundle.worker:
        # A worker refuses the in-process broker, and it must see the job table the API writes.
        return [
            "# Required: the task queue and the job table shared with the rest of the platform.",
            f"QUARRY_BROKER_URL={REDIS_URL}",
            f"QUARRY_EVENTS_URL={REDIS_URL}",
            f"{bundle.database_variable}={bundle.database_url}",
            "# Optional: artifacts in S3-compatible storage (default: <data_dir>/artifacts).",
            "# QUARRY_ARTIFACTS_URL=s3://quarry-artifacts/models",
        ]
    peers = ", ".join(bundle.event_peers)
    lines = [
        "# Backing services. Commented out, a line keeps its embedded default (SQLite under",
        "# QUARRY_DATA_DIR, in-process queue and events).",
    ]
    if bundle.event_peers and rest:
        # This side hosts the publisher or the subscriber's peer: it refuses memory:// events.
        lines += [
            f"# Required: {bundle.module} exchanges domain events with {peers}, across processes.",
            f"QUARRY_EVENTS_URL={REDIS_URL}",
        ]
    elif bundle.event_peers:
        lines += [
            f"# Uncomment before the rest joins: {bundle.module} exchanges events with {peers}.",
            f"# QUARRY_EVENTS_URL={REDIS_URL}",
        ]
    else:
        lines.append(f"# QUARRY_EVENTS_URL={REDIS_URL}")
    lines += [
        "# redis:// moves this module's background tasks to `quarry worker` processes:",
        f"# QUARRY_BROKER_URL={REDIS_URL}",
        "# A PostgreSQL database per module, when one machine is outgrown:",
        f"# {bundle.database_variable}={bundle.database_url}",
        "# QUARRY_ARTIFACTS_URL=s3://quarry-artifacts/models",
    ]
    return lines


# --- docker compose ---------------------------------------------------------------------------


def backing_env(bundle: Bundle) -> dict[str, str]:
    """Backing services both processes use in a deployment: Redis events (plus, for a worker,
    the Redis broker and the shared job table). Serving modules keep their in-process broker."""
    env = {"QUARRY_EVENTS_URL": REDIS_URL}
    if bundle.worker:
        env |= {"QUARRY_BROKER_URL": REDIS_URL, bundle.database_variable: bundle.database_url}
    return env


def compose(bundle: Bundle) -> dict[str, Any]:
    """``docker-compose.yaml``: Redis, the module's process and the rest of the platform."""
    backing = backing_env(bundle)
    services: dict[str, Any] = {
        "redis": {
            "image": "redis:7-alpine",
            "command": ["redis-server", "--appendonly", "yes"],
            "volumes": ["redis-data:/data"],
        },
        bundle.name: _compose_module(bundle, backing),
        MAIN_HOST: {
            "image": bundle.image,
            "command": ["serve", "--host", "0.0.0.0", "--port", str(MAIN_PORT)],  # noqa: S104
            "env_file": ["rest.env"],
            "environment": backing,
            "ports": [f"{MAIN_PORT}:{MAIN_PORT}"],
            "volumes": ["main-data:/data"],
            "depends_on": ["postgres", "redis"] if bundle.worker else ["redis"],
        },
    }
    volumes: dict[str, Any] = {"redis-data": {}, "main-data": {}, f"{bundle.module}-data": {}}
    if bundle.worker:
        services["postgres"] = {
            "image": "postgres:16-alpine",
            "environment": {
                "POSTGRES_USER": "quarry",
                "POSTGRES_PASSWORD": PLACEHOLDER_TOKEN,
                "POSTGRES_DB": f"quarry_{bundle.module}",
            },
            "volumes": ["postgres-data:/var/lib/postgresql/data"],
        }
        volumes["postgres-data"] = {}
    return {"name": bundle.name, "services": services, "volumes": volumes}


def _compose_module(bundle: Bundle, backing: dict[str, str]) -> dict[str, Any]:
    service: dict[str, Any] = {
        "image": bundle.image,
        "command": bundle.command[1:],  # the image's entrypoint is `quarry`
        "env_file": ["module.env"],
        "environment": backing,
        "volumes": [f"{bundle.module}-data:{DATA_DIR}"],
        "depends_on": [MAIN_HOST] if bundle.worker else ["redis"],
        "stop_grace_period": f"{bundle.grace_period}s",
    }
    if not bundle.worker:
        service["ports"] = [f"{bundle.port}:{bundle.port}"]
    if bundle.gpu:
        devices = [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
        service["deploy"] = {"resources": {"reservations": {"devices": devices}}}
    return service


# --- Kubernetes -------------------------------------------------------------------------------


def _labels(bundle: Bundle) -> dict[str, str]:
    return {"app.kubernetes.io/name": "quarry", "app.kubernetes.io/component": bundle.module}


def _metadata(bundle: Bundle) -> dict[str, Any]:
    return {"name": bundle.name, "labels": _labels(bundle)}


def deployment(bundle: Bundle) -> dict[str, Any]:
    """The module's Deployment: its command, env (token from a Secret), resources, GPU placement."""
    pod: dict[str, Any] = {
        "terminationGracePeriodSeconds": bundle.grace_period,
        "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "fsGroup": 10001},
        "containers": [_container(bundle)],
        "volumes": [{"name": "data", "emptyDir": {}}],
    }
    if bundle.gpu:
        pod["nodeSelector"] = {"nvidia.com/gpu.present": "true"}
        pod["tolerations"] = [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
        ]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(bundle),
        "spec": {
            "replicas": bundle.replicas,
            "selector": {"matchLabels": _labels(bundle)},
            "template": {"metadata": _pod_metadata(bundle), "spec": pod},
        },
    }


def _pod_metadata(bundle: Bundle) -> dict[str, Any]:
    """Labels, and for a server the annotations that have Prometheus scrape its ``/metrics``."""
    metadata: dict[str, Any] = {"labels": _labels(bundle)}
    if not bundle.worker:
        metadata["annotations"] = {
            "prometheus.io/scrape": "true",
            "prometheus.io/port": str(bundle.port),
            "prometheus.io/path": "/metrics",
        }
    return metadata


def _container(bundle: Bundle) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": bundle.module,
        "image": bundle.image,
        "command": bundle.command[:1],
        "args": bundle.command[1:],
        "env": _k8s_env(bundle),
        "resources": _RESOURCES.get(bundle.module, _RESOURCES["cpu"]),
        "volumeMounts": [{"name": "data", "mountPath": DATA_DIR}],
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(PRE_STOP_S)]}}},
    }
    if not bundle.worker:
        container["ports"] = [{"name": "http", "containerPort": bundle.port}]
        container |= _probes()
    return container


def _probes() -> dict[str, Any]:
    def get(path: str, period: int, failures: int) -> dict[str, Any]:
        return {
            "httpGet": {"path": path, "port": "http"},
            "periodSeconds": period,
            "failureThreshold": failures,
        }

    return {
        "startupProbe": get("/healthz", 5, 60),
        "livenessProbe": get("/healthz", 10, 3),
        "readinessProbe": get("/readyz", 5, 3),
    }


def _k8s_env(bundle: Bundle) -> list[dict[str, Any]]:
    def secret(name: str, key: str, *, optional: bool = False) -> dict[str, Any]:
        return {"valueFrom": {"secretKeyRef": {"name": name, "key": key, "optional": optional}}}

    # The database URL holds a password: it comes from a Secret, optional for a serving module
    # (without it, SQLite in the pod's data volume), required for a worker (shared job table).
    database = secret(DATABASE_SECRET, f"{bundle.module}-url", optional=not bundle.worker)
    env: list[dict[str, Any]] = [
        {"name": "QUARRY_MODULES", "value": bundle.module},
        {"name": "QUARRY_DATA_DIR", "value": DATA_DIR},
        {"name": "QUARRY_SERVICE_TOKEN", **secret(TOKEN_SECRET, "token")},
        {"name": bundle.database_variable, **database},
    ]
    env += [
        {"name": name, "value": value}
        for name, value in backing_env(bundle).items()
        if name != bundle.database_variable
    ]
    env += [
        {"name": f"QUARRY_REMOTE_{m.upper()}", "value": f"http://{MAIN_HOST}:{MAIN_PORT}"}
        for m in bundle.dependencies
    ]
    return env


def service(bundle: Bundle) -> dict[str, Any]:
    """The ClusterIP Service the rest of the platform calls (``QUARRY_REMOTE_<M>``)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(bundle),
        "spec": {
            "type": "ClusterIP",
            "selector": _labels(bundle),
            "ports": [{"name": "http", "port": bundle.port, "targetPort": "http"}],
        },
    }


def autoscaler(bundle: Bundle) -> dict[str, Any]:
    """An autoscaling/v2 HorizontalPodAutoscaler on CPU utilisation, and for inference on its
    scaling signals too (:data:`SCALING_SIGNALS`): the largest proposal wins."""
    signals = [
        {
            "type": "Pods",
            "pods": {
                "metric": {"name": name},
                "target": {"type": "AverageValue", "averageValue": target},
            },
        }
        for name, target in (SCALING_SIGNALS.items() if bundle.module == "inference" else ())
    ]
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _metadata(bundle),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": bundle.name},
            "minReplicas": bundle.replicas,
            "maxReplicas": bundle.replicas * 4,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": 70},
                    },
                },
                *signals,
            ],
        },
    }


def prometheus_adapter_rules(bundle: Bundle) -> dict[str, Any]:
    """Values for the ``prometheus-adapter`` Helm chart that serve the autoscaler's custom
    metrics: each signal summed over the pod's models (``rules.custom``)."""
    return {
        "rules": {
            "custom": [
                {
                    "seriesQuery": f'{name}{{namespace!="",pod!=""}}',
                    "resources": {
                        "overrides": {
                            "namespace": {"resource": "namespace"},
                            "pod": {"resource": "pod"},
                        }
                    },
                    "name": {"as": name},
                    "metricsQuery": "sum(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>)",
                }
                for name in SCALING_SIGNALS
            ]
        }
    }


def manifests(bundle: Bundle) -> dict[str, dict[str, Any]]:
    """Kubernetes manifests by file name (a worker has no Service: nothing calls it)."""
    files = {"deployment.yaml": deployment(bundle), "hpa.yaml": autoscaler(bundle)}
    if not bundle.worker:
        files["service.yaml"] = service(bundle)
    return files
