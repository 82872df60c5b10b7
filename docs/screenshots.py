"""Screenshots of every console page after the quickstart: ``python docs/screenshots.py``.

Runs ``quarry quickstart --no-serve`` into a fresh data directory (or uses ``--data-dir``, a
directory a quickstart already filled), serves it on a loopback port (keys not required), and
has the system Chromium (``.ci/install-chromium``) driven by Playwright photograph each page
into ``docs/screenshots/<page>.png``, plus the overview at phone width. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))  # run as a file: the tests' server helper lives in the repo

from playwright.sync_api import Page, sync_playwright  # noqa: E402

from tests.fakes.server import QUARRY, Server  # noqa: E402

OUT = HERE / "screenshots"
WIDTH, HEIGHT = 1100, 760
PHONE = (390, 760)
WHOLE = frozenset({"overview", "monitoring-model", "job"})
"""Pages photographed whole (their charts and log lines are below the fold)."""


def quickstart(parent: Path) -> Path:
    """A data directory the quickstart filled (its stages run in a few minutes)."""
    subprocess.run(  # noqa: S603 (our own command, fixed arguments)
        [str(QUARRY), "--data-dir", str(parent), "quickstart", "--no-serve"],
        check=True,
        env={**os.environ, "QUARRY_LOG_LEVEL": "WARNING"},
    )
    return next(parent.glob("quickstart-*"))


def pages(browser_page: Page, base: str) -> dict[str, str]:
    """Page name -> console path, following links for the ids the quickstart made."""

    def first_link(path: str, pattern: str) -> str:
        browser_page.goto(f"{base}{path}")
        html = browser_page.content()
        found = re.search(rf'href="({pattern})"', html)
        if found is None:
            raise SystemExit(f"no link matching {pattern} on {path}")
        return found.group(1)

    return {
        "overview": "/ui",
        "models": "/ui/models",
        "model": "/ui/models/churn",
        "version": "/ui/models/churn/versions/2",
        "deployments": "/ui/deployments",
        "deployment": "/ui/deployments/churn-live",
        "rollout": first_link("/ui/deployments/churn-live", r"/ui/rollouts/[^\"]+"),
        "monitoring": "/ui/monitoring",
        "monitoring-model": "/ui/monitoring/churn",
        "drift-report": first_link("/ui/monitoring/churn", r"/ui/monitoring/reports/[^\"]+"),
        "training": "/ui/training",
        "job": first_link("/ui/training", r"/ui/training/jobs/[^\"]+"),
        "features": "/ui/features",
        "feature-view": "/ui/features/views/subscribers",
        "feature-service": "/ui/features/services/churn",
        "login": "/ui/login",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, help="a directory a quickstart already filled")
    args = parser.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("chromium is not installed (run .ci/install-chromium)")
    OUT.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        data = args.data_dir or quickstart(Path(scratch))
        server = Server(data).start()
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path=chromium,
                    args=["--no-sandbox", "--disable-gpu"],
                    proxy={"server": "127.0.0.1:9", "bypass": "127.0.0.1"},
                )
                page = browser.new_page(viewport={"width": WIDTH, "height": HEIGHT})
                for name, path in pages(page, server.url).items():
                    page.goto(f"{server.url}{path}")
                    page.screenshot(path=OUT / f"{name}.png", full_page=name in WHOLE)
                    print(f"{name}: {path}")
                page.set_viewport_size({"width": PHONE[0], "height": PHONE[1]})
                page.goto(f"{server.url}/ui")
                page.screenshot(path=OUT / "overview-phone.png")
                browser.close()
        finally:
            server.stop()


if __name__ == "__main__":
    main()
