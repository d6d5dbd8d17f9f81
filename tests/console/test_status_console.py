"""The whole-node status page in headless Chromium over HTTPS: every role's section, numbers equal to /metrics,
readable at 390 px, and the operator's sessions table ending an allocation with the admin key.

Screenshots (desktop and phone width) are written to tests/artifacts/console/ (git-ignored)."""

from __future__ import annotations

import asyncio
import json
import math
import re
import ssl
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from aioice import turn

from certs import pki
from edge.tokens import mint
from tests.conftest import REQUIRE_TOOLS, NodeFiles, serving, umedge, write_config
from tests.ops.test_status_page import CHROMEDRIVER, CHROMIUM, wait_text
from tests.turn.test_turn_aioice import Collector

pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER) and not REQUIRE_TOOLS,
                                reason="chromium and chromium-driver not installed")

SECRET = "console-page-secret-0123456789"
ADMIN_KEY = "console-page-admin-0123456789"
API_KEY = "console-page-api-key-0123456789"
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts" / "console"


def https_browser() -> Any:
    """Chromium trusting nothing but told to accept the node's pool-CA certificate (the test's own CA)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1280,1800", "--ignore-certificate-errors"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def metrics(files: NodeFiles) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{files.port('web', 'http_port')}/metrics",
                                  timeout=5).read().decode()
    values: dict[str, float] = {}
    for line in text.splitlines():
        match = re.match(r"^(\w+)(\{[^}]*\})? (\S+)$", line)
        if match:
            values[match.group(1) + (match.group(2) or "")] = float(match.group(3))
    return values


def family(values: dict[str, float], name: str) -> dict[str, float]:
    return {k: v for k, v in values.items() if k == name or k.startswith(name + "{")}


def issue_token(files: NodeFiles) -> None:
    context = ssl.create_default_context(cafile=str(files.certs_dir / "ca.crt"))
    context.check_hostname = False
    request = urllib.request.Request(
        f"https://127.0.0.1:{files.port('auth', 'https_port')}/v1/credentials",
        data=json.dumps({"identity": "sip:page@example.test", "ttl": 60}).encode(),
        headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"})
    assert urllib.request.urlopen(request, context=context, timeout=5).status == 200


def test_status_page_every_role_numbers_match_metrics_phone_width_and_kill(tmp_path: Path) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    files = write_config(tmp_path, {
        "edge": {"auth_secrets": [SECRET]}, "auth": {"api_keys": [API_KEY]},
        "web": {"admin_keys": [ADMIN_KEY]}})
    web = files.port("web", "http_port")
    assert umedge("certs", "init", "--config", str(files.path)).returncode == 0
    pki.issue(files.certs_dir, "gateway1", [], days=12)  # a certificate about to run out: the page warns
    loop = asyncio.new_event_loop()
    held: list[object] = []
    driver = None
    with serving(files) as process:
        try:
            async def allocate(identity: str, transport: str) -> object:
                token = mint(SECRET, identity, 600, time.time())
                relay, _ = await turn.create_turn_endpoint(
                    Collector, ("127.0.0.1", files.port("edge", "turn_udp_port")), token.username, token.password,
                    transport=transport)
                return relay

            for identity, transport in (("sip:ann@example.test", "udp"), ("sip:ann@example.test", "tcp"),
                                        ("sip:ben@example.test", "udp")):
                held.append(loop.run_until_complete(allocate(identity, transport)))
            issue_token(files)

            driver = https_browser()
            driver.get(f"https://127.0.0.1:{web}/")
            assert wait_text(driver, "allocations-active", lambda t: t == "3") == "3"
            for section in ("sec-edge", "sec-auth", "sec-callrouter", "sec-um", "sec-delivery", "sec-pool",
                            "sec-certs"):
                assert driver.find_element("id", section).is_displayed(), section
            wait_text(driver, "tokens-issued", lambda t: "https 1" in t)

            # the numbers on the page are the numbers in /metrics
            m = metrics(files)
            page = {name: driver.find_element("id", name).text for name in (
                "allocations-active", "allocations-by-transport", "relay-ports-free", "pool-count", "calls-active",
                "cert-days", "tokens-issued", "edge-dialect")}
            assert int(page["allocations-active"]) == sum(family(m, "umedge_turn_allocations_active").values()) == 3
            assert "udp 2" in page["allocations-by-transport"] and "tcp 1" in page["allocations-by-transport"]
            assert m['umedge_turn_allocations_active{transport="udp"}'] == 2
            assert int(page["relay-ports-free"]) == m["umedge_relay_ports_free"]
            assert int(page["pool-count"]) == m["umedge_pool_members"] == 1
            assert int(page["calls-active"]) == m["umedge_calls_active"] == 0
            soonest = min(family(m, "umedge_certificate_expiry_timestamp_seconds").values())
            assert int(page["cert-days"]) == math.floor((soonest - time.time()) / 86400)
            assert page["cert-days"] in ("11", "12") and driver.find_element("id", "cert-days-name").text == "gateway1"
            banner = driver.find_element("id", "cert-warning")
            assert banner.is_displayed() and "gateway1.crt expires in" in banner.text
            assert "https 1" in page["tokens-issued"] and m['umedge_tokens_issued_total{path="https"}'] == 1
            assert page["edge-dialect"] == "rfc8656 3"
            assert "demo-gateway" in driver.find_element("id", "gateways").text
            assert "(active)" in driver.find_element("id", "slots").text

            # the operator signs in with the admin key and ends one of ben's allocations
            driver.find_element("id", "admin-key").send_keys(ADMIN_KEY + "\n")
            wait_text(driver, "console-state", lambda t: t.startswith("3 allocation(s) on node1"))
            driver.save_screenshot(str(ARTIFACTS / "status-desktop.png"))

            driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                                   {"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": True})
            time.sleep(0.5)
            width = driver.execute_script("return document.documentElement.scrollWidth")
            assert width <= 390, f"the page is {width} px wide on a 390 px screen"
            assert driver.find_element("id", "allocations-active").is_displayed()
            driver.save_screenshot(str(ARTIFACTS / "status-phone.png"))
            driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
            for name in ("status-desktop.png", "status-phone.png"):
                assert (ARTIFACTS / name).stat().st_size > 20_000

            ben = next(row for row in driver.find_elements("css selector", "#sessions tbody tr")
                       if "sip:ben@example.test" in row.text)
            button = ben.find_element("css selector", "button")
            button.click()
            assert button.text == "end?"  # armed: the second click ends it
            button.click()
            wait_text(driver, "console-action", lambda t: t.startswith("ended node1:"))
            assert wait_text(driver, "allocations-active", lambda t: t == "2") == "2"
            assert sum(family(metrics(files), "umedge_turn_allocations_active").values()) == 2
            log = process.stderr()
            assert re.search(r"admin: apikey:key-[0-9a-f]{8}@admin ended allocation node1:\d+ of "
                             r"sip:ben@example.test", log), log[-2000:]
        finally:
            if driver is not None:
                driver.quit()

            async def release() -> None:
                for relay in held:
                    relay.close()  # type: ignore[attr-defined]
                await asyncio.sleep(0.1)

            loop.run_until_complete(release())
            loop.close()
