"""Headless Chromium for the browser tests: Debian's chromium and chromedriver.

Selenium drives the installed chromedriver directly (no Selenium Manager, so no
driver download and no usage statistics), in a fresh profile with Chromium's
own background traffic (updates, sync, field trials) switched off: the only
requests are the pages' own.
"""

import base64
import contextlib
import json
import shutil
from pathlib import Path
from urllib.parse import urlsplit

import pytest

CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1400,1000",
)
# Schemes of requests that go over the network (blob: and data: stay in the page).
NETWORK_SCHEMES = {"http", "https", "ws", "wss", "ftp"}


@contextlib.contextmanager
def chromium(profile: Path, monkeypatch):
    """A started headless Chromium with console and network logs; skips without it."""
    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (binary and driver):
        pytest.skip(
            "chromium and chromedriver are not installed "
            "(scripts/test_tools.sh installs them with apt-get when it can)"
        )
    webdriver = pytest.importorskip("selenium.webdriver")
    # Read by Selenium Manager, which a driver path given below already skips.
    monkeypatch.setenv("SE_AVOID_STATS", "true")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in (*CHROMIUM_ARGS, f"--user-data-dir={profile}"):
        options.add_argument(argument)
    options.set_capability(
        "goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"}
    )
    started = webdriver.Chrome(
        options=options, service=webdriver.ChromeService(executable_path=driver)
    )
    try:
        yield started
    finally:
        started.quit()


def requested_urls(browser) -> list[str]:
    """Every URL the browser asked for since the last call (its network log)."""
    urls = []
    for entry in browser.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def foreign_urls(urls, host: str) -> list[str]:
    """The network requests among `urls` that went to another host than `host`."""
    foreign = []
    for url in urls:
        inner = url.removeprefix("blob:")
        parts = urlsplit(inner)
        if parts.scheme in NETWORK_SCHEMES and parts.hostname != host:
            foreign.append(url)
    return foreign


def console_errors(browser) -> list[str]:
    """The console's errors since the last call."""
    return [
        entry["message"]
        for entry in browser.get_log("browser")
        if entry["level"] == "SEVERE"
    ]


def full_page_screenshot(browser, path: Path, *, max_height: int = 4000) -> bytes:
    """A PNG of the whole page (up to `max_height` pixels), saved to `path`."""
    width, height = browser.execute_script(
        "return [document.documentElement.clientWidth,"
        " Math.max(document.documentElement.scrollHeight, window.innerHeight)]"
    )
    shot = browser.execute_cdp_cmd(
        "Page.captureScreenshot",
        {
            "format": "png",
            "captureBeyondViewport": True,
            "clip": {
                "x": 0,
                "y": 0,
                "width": width,
                "height": min(height, max_height),
                "scale": 1,
            },
        },
    )
    png = base64.b64decode(shot["data"])
    path.write_bytes(png)
    return png
