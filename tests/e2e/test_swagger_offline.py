"""``/schema/swagger`` on a host without internet: the page names only its own server's files,
and a headless Chromium whose every outside request goes to a dead proxy still renders the
operations."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fakes.browser import chromium
from tests.fakes.server import Server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    served = Server(tmp_path_factory.mktemp("swagger") / "data").start()
    try:
        yield served
    finally:
        served.stop()


def test_the_page_and_its_assets_come_from_the_server(server: Server) -> None:
    page = httpx.get(f"{server.url}/schema/swagger").text

    urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", page)
    assert urls, page[:500]
    assert all(u.startswith("/schema/assets/") for u in urls), urls
    assert "//" not in " ".join(urls)
    for url in urls:
        answer = httpx.get(f"{server.url}{url}")
        assert answer.status_code == 200, url
        assert len(answer.content) > 100, url
    assert "Apache License" in httpx.get(f"{server.url}/schema/assets/LICENSE").text


def test_chromium_renders_the_operations_with_the_network_cut_off(
    server: Server, tmp_path: Path
) -> None:
    binary = chromium()

    done = subprocess.run(
        [
            binary,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            # every request that is not to this host goes to a port where nothing listens
            "--proxy-server=127.0.0.1:9",
            "--proxy-bypass-list=127.0.0.1",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=15000",
            "--dump-dom",
            f"{server.url}/schema/swagger",
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )

    dom = done.stdout.decode()
    assert "opblock-tag" in dom, dom[-2000:]
    for tag in ("registry", "features", "inference", "Open Inference Protocol", "training"):
        assert f'data-tag="{tag}"' in dom, tag
    assert 'data-path="/v1/predict/{model_ref}"' in dom
