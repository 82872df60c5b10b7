"""The system Chromium for browser tests: the Debian package (``.ci/install-chromium``)."""

from __future__ import annotations

import shutil

import pytest

from tests.conftest import IN_CI

__all__ = ["chromium"]


def chromium() -> str:
    """The Chromium binary; skips the test locally, fails it in CI, when there is none."""
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        message = "chromium is not installed (run .ci/install-chromium)"
        if IN_CI:
            pytest.fail(f"{message}; it is required when CI=true")
        pytest.skip(message)
    return binary
