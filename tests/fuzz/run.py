"""A longer fuzz run by hand: ``python -m tests.fuzz.run [--checks all] [--seconds 150]``.

Starts a seeded `quarry serve` (embedded defaults, or PostgreSQL + Redis with ``--postgres URL
--redis URL``), runs schemathesis over every phase with the given checks, prints its summary and
exits with its status. The test in ``test_fuzz.py`` runs the same, shorter, checking for 5xx only.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

from tests.fakes.server import Server
from tests.fuzz.test_fuzz import HERE, SCHEMATHESIS, seed

MODULES = ("registry", "features", "monitoring", "inference", "training")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz.run")
    parser.add_argument("--checks", default="all", help="schemathesis checks (default: all)")
    parser.add_argument("--seconds", type=int, default=150, help="time budget of the run")
    parser.add_argument("--postgres", help="a PostgreSQL URL for every module's database")
    parser.add_argument("--redis", help="a Redis URL for broker, events and online store")
    args = parser.parse_args()
    env = {"QUARRY_LOG_LEVEL": "ERROR"}
    if args.postgres:
        env |= {f"QUARRY_{m.upper()}_DATABASE_URL": args.postgres for m in MODULES}
    if args.redis:
        prefix = f"quarry-fuzz-{uuid.uuid4().hex[:8]}:"
        env |= {
            "QUARRY_BROKER_URL": args.redis,
            "QUARRY_EVENTS_URL": args.redis,
            "QUARRY_ONLINE_STORE_URL": args.redis,
            "QUARRY_REDIS_PREFIX": prefix,
        }
    with tempfile.TemporaryDirectory(prefix="quarry-fuzz-") as tmp:
        server = Server(Path(tmp) / "data", env=env).start()
        try:
            seed(server.url)
            command = [
                str(SCHEMATHESIS),
                "--config-file",
                str(HERE / "schemathesis.toml"),
                "run",
                f"{server.url}/schema/openapi.json",
                "--checks",
                args.checks,
                "--phases",
                "examples,coverage,fuzzing,stateful",
                "--max-time",
                str(args.seconds),
                "--workers",
                "2",
                "--request-timeout",
                "30",
                "--no-color",
            ]
            return subprocess.call(command, cwd=tmp, env=os.environ.copy())
        finally:
            server.stop()
            if args.redis:
                _forget(args.redis, env["QUARRY_REDIS_PREFIX"])


def _forget(url: str, prefix: str) -> None:
    """Delete the run's Redis keys: the server outlives the run."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


if __name__ == "__main__":
    sys.exit(main())
