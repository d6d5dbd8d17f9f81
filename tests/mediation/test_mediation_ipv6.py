"""Mediation over IPv6: the edge on ::1 registers with a Kamailio on [::1] (its Contact an MRAS URI in
brackets) and keeps it alive with OPTIONS; Kamailio's Via `received=::1` (RFC 3261's unbracketed form)
no longer makes the edge drop its answers."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import ServeProcess, umedge, write_config
from tests.mediation.kamailio import Kamailio
from tests.mediation.test_mediation import mediation, wait_for


def test_register_and_keepalive_with_kamailio_on_ipv6(tmp_path: Path) -> None:
    kamailio = Kamailio(tmp_path / "kamailio", host="::1").start()
    files = write_config(tmp_path, {"node": {"listen_address": "::1"},
                                    "edge": {"listen_address": "::1", "relay_address": "::1"},
                                    "mediation": mediation({"servers": [f"sip:[::1]:{kamailio.port};transport=tcp"]})})
    process = ServeProcess(files.path, "--roles", "edge")
    try:
        process.wait_ready()
        wait_for(kamailio.contacts, 10, "the edge's contact in Kamailio's location table")
        [contact] = kamailio.contacts()
        assert f"sips:[::1]:{files.port('auth', 'mras_tls_port')};transport=tls" in contact
        status_file = tmp_path / "state" / "mediation.json"
        wait_for(lambda: status_file.exists() and json.loads(status_file.read_text())["servers"][0]["keepalive_ok"],
                 10, "an answered OPTIONS keepalive")
        status = json.loads(umedge("mediation", "status", "--json", "--config", str(files.path)).stdout)
        [server] = status["servers"]
        assert server["registration"] == "registered" and server["keepalive_ok"]
        assert "[::1]" in server["address"], server
        assert process.stop() == 0
        assert kamailio.contacts() == []  # de-registered on the clean stop, over IPv6 too
    finally:
        process.kill()
        kamailio.stop()
