"""coturn's turnutils_uclient (and turnutils_peer) against the TURN server under test.

By default the server is `umedge serve --roles edge`; with UMEDGE_TURN_UNDER_TEST=coturn
it is coturn's own turnserver, which validates this harness. What uclient does and
needs is in tests/turn/coturn_tools.py.

The lossless runs go at uclient's default RTP pacing (20 ms, 50 packets/s per
client; UMEDGE_TURN_UCLIENT_INTERVAL_MS overrides) and run all at once against one
server, which keeps the file near 35 s: every uclient run lasts at least ~6 s
(clients start 1-6 s apart) plus -n x interval.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REQUIRE_TOOLS, ServeProcess, write_config
from tests.turn.coturn_tools import (
    CoturnServer,
    EchoPeer,
    UclientResult,
    make_self_signed_cert,
    missing_tools,
    run_uclient,
    run_uclients,
    uclient_clients,
)

UNDER_TEST = os.environ.get("UMEDGE_TURN_UNDER_TEST", "umedge")
INTERVAL_MS = int(os.environ.get("UMEDGE_TURN_UCLIENT_INTERVAL_MS", "20"))
SECRET = "interop-secret-0123456789"
SECOND_SECRET = "rotated-secret-9876543210"  # validates, does not sign
WRONG_SECRET = "not-the-secret-0000000000"

_needed = ["turnutils_uclient", "turnutils_peer"] + (["turnserver"] if UNDER_TEST == "coturn" else [])
_missing = missing_tools(_needed)
pytestmark = pytest.mark.skipif(bool(_missing) and not REQUIRE_TOOLS,
                                reason=f"coturn tools missing: {', '.join(_missing)} (apt-get install coturn)")
assert UNDER_TEST in ("umedge", "coturn"), f"UMEDGE_TURN_UNDER_TEST={UNDER_TEST!r}: umedge or coturn"


@dataclass
class Relay:
    """The TURN server under test, on 127.0.0.1."""

    name: str
    port: int  # UDP and TCP
    tls_port: int
    ca_file: Path  # what uclient -E verifies the TLS certificate against
    log: Callable[[], str]

    def port_for(self, options: dict[str, object]) -> int:
        return self.tls_port if options.get("tls") else self.port

    def log_tail(self, chars: int = 3000) -> str:
        return f"--- {self.name} log (tail) ---\n{self.log()[-chars:]}"


@contextmanager
def relay_server(directory: Path, *, loopback_peers: bool = True, user_quota: int = 0) -> Iterator[Relay]:
    """The server under test with SECRET and SECOND_SECRET; relays may reach 127.0.0.0/8 if `loopback_peers`."""
    if UNDER_TEST == "coturn":
        cert, key = make_self_signed_cert(directory / "tls")
        with CoturnServer(directory / "coturn", [SECRET, SECOND_SECRET], cert=cert, key=key,
                          allow_loopback_peers=loopback_peers, user_quota=user_quota) as server:
            assert server.tls_port is not None
            yield Relay("coturn", server.port, server.tls_port, cert, server.log_text)
        return
    edge: dict[str, object] = {"auth_secrets": [SECRET, SECOND_SECRET], "allocation_bandwidth_kbps": 0}
    if loopback_peers:
        edge["allowed_peer_networks"] = ["127.0.0.0/8"]
    if user_quota:
        edge["max_allocations_per_user"] = user_quota
    files = write_config(directory, {"edge": edge})
    process = ServeProcess(files.path, "--roles", "edge")
    try:
        process.wait_ready()
        yield Relay("umedge", files.port("edge", "turn_udp_port"), files.port("edge", "turn_tls_port"),
                    files.certs_dir / "ca.crt", process.stderr)
    finally:
        process.kill()


@pytest.fixture(scope="module")
def peer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EchoPeer]:
    with EchoPeer(log_path=tmp_path_factory.mktemp("peer") / "peer.log") as echo:
        yield echo


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Relay]:
    with relay_server(tmp_path_factory.mktemp("relay")) as server:
        yield server


# Of the datagrams sent, per run: seven uclient runs of 10 clients share a 2-core host with the server,
# and 0.9 % was seen on a TLS run while a benchmark loaded the same host; an idle host loses none.
MAX_LOSS = 0.02

# name -> uclient options; every run -m 10 -n 1000 -l 170 unless it says otherwise.
LOSSLESS = {
    "udp": {},
    "udp-no-rtcp": {"no_rtcp": True},
    "tcp": {"tcp": True},
    "send-indications": {"send_indications": True},
    "client-to-client": {"client_to_client": True},
    "tls": {"tls": True},
    "second-secret": {"secret": SECOND_SECRET, "sessions": 2, "messages": 100},
}


def lossless_options(name: str, relay: Relay, peer: EchoPeer) -> dict[str, object]:
    options: dict[str, object] = {"secret": SECRET, "user": name, "sessions": 10, "messages": 1000,
                                  "length": 170, "interval_ms": INTERVAL_MS, **LOSSLESS[name]}
    if not options.get("client_to_client"):
        options["peer_port"] = peer.port
    if options.get("tls"):
        options["ca_file"] = relay.ca_file
    return options


@pytest.fixture(scope="module")
def lossless_runs(request: pytest.FixtureRequest, relay: Relay, peer: EchoPeer) -> dict[str, UclientResult]:
    """The selected LOSSLESS runs, all at once against `relay` (each user its own quota)."""
    wanted = {item.callspec.params["name"] for item in request.session.items
              if getattr(item, "originalname", "") == "test_relays_without_loss" and hasattr(item, "callspec")}
    runs = {name: lossless_options(name, relay, peer) for name in LOSSLESS if name in wanted}
    return run_uclients(runs, relay.port_for)


@pytest.mark.parametrize("name", list(LOSSLESS))
def test_relays_without_loss(name: str, lossless_runs: dict[str, UclientResult], relay: Relay,
                             peer: EchoPeer) -> None:
    options = lossless_options(name, relay, peer)
    result = lossless_runs[name]
    why = f"{result.describe()}\n{relay.log_tail()}"
    assert result.completed, why
    clients = uclient_clients(int(options["sessions"]), no_rtcp=bool(options.get("no_rtcp")),  # type: ignore[arg-type]
                              client_to_client=bool(options.get("client_to_client")))
    assert result.sent == clients * int(options["messages"]), why  # type: ignore[arg-type]
    # Every run crosses a UDP leg (relay <-> peer, and client <-> relay unless tcp/tls), where RFC 8656
    # promises no delivery: a loaded host may drop a datagram in a socket buffer. Bound the loss instead.
    assert result.received <= result.sent, why
    assert result.sent - result.received <= MAX_LOSS * result.sent, why
    assert result.lost is not None and result.lost <= MAX_LOSS * result.sent, why
    assert result.send_dropped == 0, why
    # A loaded host can delay an Allocate's answer past uclient's timer; uclient then sends a new Allocate
    # (a new transaction) on the 5-tuple that already has its allocation, gets 437 as RFC 8656 §7.2 says
    # (coturn answers the same) and carries on. Any other error code is a failure.
    assert set(result.error_codes) <= {437}, why


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_wrong_secret_gets_401(transport: str, relay: Relay, peer: EchoPeer) -> None:
    result = run_uclient(relay.port, secret=WRONG_SECRET, user="intruder", peer_port=peer.port, sessions=1,
                         messages=5, tcp=transport == "tcp", verbose=True, timeout=30)
    why = f"{result.describe()}\n{relay.log_tail()}"
    assert result.returncode != 0 and not result.timed_out, why
    assert not result.sent and "Received relay addr" not in result.output, why
    # uclient answers every 401 + REALM + NONCE with a signed retry and gives up after 32;
    # a 401 without them is printed as "error 401".
    challenged = result.allocation_refused and result.output.count("allocate sent") >= 2
    assert challenged or 401 in result.error_codes, why
    assert set(result.error_codes) <= {401}, why


@pytest.fixture(scope="module")
def closed_relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Relay]:
    """No peer networks allowed: loopback peers are denied as by default."""
    with relay_server(tmp_path_factory.mktemp("closed"), loopback_peers=False) as server:
        yield server


@pytest.mark.parametrize("mode", ["channel", "send-indications", "client-to-client"])
def test_loopback_peer_is_refused_unless_allowed(mode: str, closed_relay: Relay, peer: EchoPeer) -> None:
    result = run_uclient(closed_relay.port, secret=SECRET, user=f"closed-{mode}", peer_port=peer.port,
                         sessions=2, messages=10, send_indications=mode == "send-indications",
                         client_to_client=mode == "client-to-client", timeout=30)
    why = f"{result.describe()}\n{closed_relay.log_tail()}"
    assert result.returncode != 0 and not result.timed_out, why
    assert 403 in result.error_codes, why
    assert not result.received, why


def test_allocation_quota_gives_486(tmp_path: Path, peer: EchoPeer) -> None:
    # One uclient session without -c holds three allocations (probe, RTP, RTCP) for one user.
    with relay_server(tmp_path, user_quota=2) as quota_relay:
        result = run_uclient(quota_relay.port, secret=SECRET, user="quota", peer_port=peer.port, sessions=2,
                             messages=10, timeout=30)
        why = f"{result.describe()}\n{quota_relay.log_tail()}"
    assert result.returncode != 0 and not result.timed_out, why
    assert 486 in result.error_codes, why
