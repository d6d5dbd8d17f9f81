"""The live status page in headless Chromium (Debian's chromium + chromedriver via Selenium)."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
import urllib.request
from pathlib import Path

import pytest
from aioice import turn

from edge.tokens import mint
from tests.conftest import REQUIRE_TOOLS, ServeProcess, umedge, write_config
from tests.turn.test_turn_aioice import Collector

SECRET = "status-secret-0123456789"
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER) and not REQUIRE_TOOLS,
                                reason="chromium and chromium-driver not installed")


def browser():  # type: ignore[no-untyped-def]
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1280,1400"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def wait_text(driver, element_id: str, predicate, timeout: float = 10) -> str:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = driver.find_element("id", element_id).text
        if predicate(text):
            return text
        time.sleep(0.2)
    raise AssertionError(f"#{element_id} stayed {text!r}")


def test_status_page_shows_listeners_and_counts_allocations(tmp_path: Path) -> None:
    files = write_config(tmp_path, {"edge": {"auth_secrets": [SECRET]}})
    process = ServeProcess(files.path, "--roles", "edge,web")
    driver = None
    try:
        process.wait_ready()
        driver = browser()
        driver.get(f"http://127.0.0.1:{files.port('web', 'http_port')}/")
        listeners = wait_text(driver, "listeners", lambda t: "A/V Edge media relay" in t)
        assert str(files.port("edge", "turn_tls_port")) in listeners and "MTLS" in listeners
        assert wait_text(driver, "allocations-active", lambda t: t == "0") == "0"

        async def allocate() -> list[object]:
            token = mint(SECRET, "sip:browser@example.test", 600, time.time())
            held = []
            for _ in range(3):
                transport, _ = await turn.create_turn_endpoint(
                    Collector, ("127.0.0.1", files.port("edge", "turn_udp_port")), token.username, token.password)
                held.append(transport)
            return held

        loop = asyncio.new_event_loop()
        held = loop.run_until_complete(allocate())
        assert wait_text(driver, "allocations-active", lambda t: t == "3") == "3"
        driver.save_screenshot(str(tmp_path / "status-page.png"))
        assert (tmp_path / "status-page.png").stat().st_size > 10_000

        # umedge status --json and /metrics agree with what the page shows
        status = json.loads(umedge("status", "--json", "--config", str(files.path)).stdout)
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{files.port('web', 'http_port')}/metrics",
                                         timeout=5).read().decode()
        assert status["allocations"]["active"] == 3
        assert 'umedge_turn_allocations_active{transport="udp"} 3.0' in metrics
        assert f"umedge_calls_active {float(status['calls']['active'])}" in metrics
        async def release() -> None:
            for transport in held:
                transport.close()  # type: ignore[attr-defined]
            await asyncio.sleep(0.3)

        loop.run_until_complete(release())
        loop.close()
        assert wait_text(driver, "allocations-active", lambda t: t == "0") == "0"
    finally:
        if driver is not None:
            driver.quit()
        process.kill()
