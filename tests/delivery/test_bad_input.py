"""Bad input loses nothing: a mailbox without `email` gets no delivery and one clear warning (start-up log and
check-config); an MTA certificate that cannot be verified, then a wrong AUTH password, keep the voicemail queued
with one log line per minute per kind (many attempts, one line) and a metric, and once the config is right
it is delivered, once."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REQUIRE_TOOLS, umedge
from tests.delivery.mailstack import RELAY_PASSWORD, RELAY_USER, Dovecot, Postfix, skip_reason
from tests.delivery.support import Calls, node_config, outbox, started, together, voicemails
from tests.sip.sipp_tools import sipp_available

needs_sipp = pytest.mark.skipif(not sipp_available() and not REQUIRE_TOOLS, reason="sipp (Debian sip-tester) missing")
MAILBOXES = [{"extension": "1001", "server": "local", "dial_plan": "default", "email": "1001@example.test"},
             {"extension": "1002", "server": "local", "dial_plan": "default"},
             {"extension": "1003", "server": "local", "dial_plan": "default"}]


@pytest.fixture
def stack() -> Iterator[tuple[Dovecot, Postfix]]:
    reason = skip_reason("dovecot", "postfix")
    if reason:
        pytest.skip(reason)
    dovecot = Dovecot().start()
    mta = Postfix(dovecot).setup()
    mta.start()
    try:
        yield dovecot, mta
    finally:
        mta.cleanup()
        dovecot.stop()


def _metric(files: object, name: str) -> float:
    port = files.values["web"]["http_port"]  # type: ignore[attr-defined]
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    for line in text.splitlines():
        if line.startswith(name):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


def _wait_metric(files: object, name: str, at_least: float, seconds: float) -> float:
    """The metric once it reaches `at_least`, or its value after `seconds`."""
    deadline = time.monotonic() + seconds
    while (value := _metric(files, name)) < at_least and time.monotonic() < deadline:
        time.sleep(0.2)
    return value


@needs_sipp
def test_no_email_bad_certificate_and_wrong_password_keep_messages(tmp_path: Path,
                                                                   stack: tuple[Dovecot, Postfix]) -> None:
    dovecot, mta = stack
    (tmp_path / "good").write_text(RELAY_PASSWORD + "\n")
    (tmp_path / "bad").write_text("not-the-password\n")
    base = {"mode": "smtp", "host": "127.0.0.1", "port": mta.port, "username": RELAY_USER,
            "retry_initial_seconds": 0.3, "retry_max_seconds": 0.5, "timeout": 5}
    # 1. No ca_file: the MTA's self-signed certificate cannot be verified.
    files = node_config(tmp_path, {**base, "password_file": str(tmp_path / "good")}, mailboxes=MAILBOXES)
    checked = umedge("check-config", "--config", str(files.path))
    assert checked.returncode == 0
    assert "warning" in checked.stdout and "2 local mailbox(es) have no email key (1002, 1003)" in checked.stdout
    calls = Calls(tmp_path, files, seconds=0.8, called="1001", wait_ms=1500)
    no_email = Calls(tmp_path, files, seconds=0.8, called="1002", wait_ms=1500)
    process = started(files)
    try:
        together(no_email.run, calls.run)
        # several attempts at 0.3-0.5 s backoff
        assert _wait_metric(files, 'umedge_voicemail_delivery_errors_total{kind="tls-verify"}', 3, 10) >= 3
        log = process.stderr()
        assert log.count("have no email key (1002, 1003)") == 1
        assert log.count("certificate cannot be verified") == 1, log[-3000:]  # once a minute, not per attempt
        [queued] = outbox(files)["queued"]
        assert queued["mailbox"] == "1001" and queued["attempts"] >= 3
        assert len(voicemails(files)) == 2  # 1002's stays on the phone, not queued
    finally:
        process.kill()

    # 2. The certificate verifies, the password is wrong.
    verified = {**base, "ca_file": str(mta.ca_file)}
    files = node_config(tmp_path, {**verified, "password_file": str(tmp_path / "bad")}, mailboxes=MAILBOXES)
    process = started(files)
    try:
        # Dovecot's SASL answers a wrong password after a penalty delay
        _wait_metric(files, 'umedge_voicemail_delivery_errors_total{kind="auth"}', 1, 15)
        log = process.stderr()
        assert log.count("AUTH refused") == 1, log[-3000:]
        assert "not-the-password" not in log and RELAY_PASSWORD not in log
        assert _metric(files, "umedge_voicemail_outbox_queued") == 1
        assert outbox(files)["queue_size"] == 1
    finally:
        process.kill()

    # 3. Right at last: delivered once, nothing lost.
    files = node_config(tmp_path, {**verified, "password_file": str(tmp_path / "good")}, mailboxes=MAILBOXES)
    process = started(files)
    try:
        found = dovecot.wait_messages("1001", 1, timeout=10)
        assert len(found) == 1
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and outbox(files)["queue_size"]:
            time.sleep(0.2)
        assert outbox(files)["queue_size"] == 0
        assert dovecot.messages("1002") == []
    finally:
        process.kill()
