"""Shared fixtures: a private runtime cache for the whole session (the suite never writes to the user's
``~/.cache/humanliff``) and headless chromium (Debian's, driven by Playwright) for the viewer tests."""

import os
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="session", autouse=True)
def private_runtime_cache(tmp_path_factory):
    """``$HUMANLIFF_CACHE`` in a temporary folder for the session (tests may still set their own)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HUMANLIFF_CACHE", str(tmp_path_factory.mktemp("humanliff_cache")))
        yield


@pytest.fixture(scope="module")
def browser():
    """A headless chromium; skipped (failed on CI, which installs it) when /usr/bin/chromium is absent."""
    if not CHROMIUM.exists():
        reason = f"no browser at {CHROMIUM} (apt-get install chromium; .ci/run installs it)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()
