"""The fast paths (edge/offload) in three namespaces, with coturn's uclient and peer and our own client.

Every test runs for the kernel path (`kernel_offload = "on"`), the native forwarder
(`native_forwarder = "on"`) and neither (both "off": the engine in Python): the same traffic,
the same outcomes; with a fast path the counters show it moved every datagram and the engine
saw only STUN.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REQUIRE_TOOLS, ROOT, NodeFiles, ServeProcess, write_config
from tests.offload import lab
from tests.turn.coturn_tools import UclientProcess, tool, uclient_command

SECRET = "offload-secret-0123456789"
PEER_PORT = 3480  # turnutils_peer echoes on 3480 and 3481 in the peer namespace
MODES = ("on", "native", "off")  # kernel path, native forwarder, Python
FAST = ("on", "native")


@pytest.fixture(scope="module")
def namespaces() -> Iterator[None]:
    why = lab.missing()
    if why:
        if REQUIRE_TOOLS:
            pytest.fail(why)
        pytest.skip(why)
    lab.build()
    peer = subprocess.Popen([*lab.prefix("peer"), tool("turnutils_peer"), "-L", lab.PEER, "-p", str(PEER_PORT)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        assert peer.poll() is None, "turnutils_peer did not start"
        yield
    finally:
        peer.kill()
        peer.wait()
        lab.destroy()
        assert lab.leftovers() == [], "offload lab namespaces left behind"


def start_edge(directory: Path, mode: str, **edge: object) -> tuple[NodeFiles, ServeProcess]:
    directory.mkdir(parents=True, exist_ok=True)
    files = write_config(directory, {
        "node": {"roles": ["edge", "web"]},
        "edge": {"listen_address": lab.EDGE_CLIENT_SIDE, "relay_address": lab.EDGE_PEER_SIDE,
                 "auth_secrets": [SECRET], "allowed_peer_networks": ["198.51.100.0/24"],
                 "allocation_bandwidth_kbps": 0, "kernel_offload": "on" if mode == "on" else "off",
                 "native_forwarder": "on" if mode == "native" else "off", **edge}})
    process = ServeProcess(files.path, prefix=lab.prefix("edge"))
    try:
        process.wait_ready()
    except BaseException:
        process.kill()
        raise
    return files, process


def stop_edge(process: ServeProcess) -> str:
    """SIGTERM drains; a second one stops at once (the offload detaches either way). Returns the log."""
    if process.proc.poll() is None:
        process.proc.send_signal(signal.SIGTERM)
        try:
            process.proc.wait(timeout=1)
        except subprocess.TimeoutExpired:
            process.proc.send_signal(signal.SIGTERM)
        try:
            process.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
    log = process.stderr()
    process.kill()
    return log


def metrics(files: NodeFiles) -> dict[str, float]:
    page = lab.run(*lab.prefix("edge"), "curl", "-s", "--max-time", "5",
                   f"http://127.0.0.1:{files.port('web', 'http_port')}/metrics").stdout
    out: dict[str, float] = {}
    for line in page.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def wait_metric(files: NodeFiles, name: str, at_least: float, timeout: float = 4.0) -> dict[str, float]:
    """The metrics once `name` reached `at_least` (the engine collects the kernel's counts once a second)."""
    deadline = time.monotonic() + timeout
    while True:
        values = metrics(files)
        if values.get(name, 0.0) >= at_least or time.monotonic() > deadline:
            return values
        time.sleep(0.3)


def client_script(*args: str, timeout: float = 30) -> subprocess.Popen[str]:
    return subprocess.Popen([*lab.prefix("client"), sys.executable, "-m", "tests.offload.turnclient", *args],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


TO_PEER = 'umedge_turn_relayed_datagrams_total{direction="to_peer"}'
TO_CLIENT = 'umedge_turn_relayed_datagrams_total{direction="to_client"}'
OFF_TO_PEER = 'umedge_turn_offloaded_datagrams_total{direction="to_peer"}'
OFF_TO_CLIENT = 'umedge_turn_offloaded_datagrams_total{direction="to_client"}'
MALFORMED = 'umedge_turn_dropped_total{reason="kernel_malformed"}'
NO_CHANNEL = 'umedge_turn_dropped_total{reason="no_channel"}'
CHANNELS = {"on": "umedge_turn_offload_channels", "native": "umedge_turn_native_forwarder_channels"}


@pytest.fixture(scope="module", params=MODES)
def edge(request: pytest.FixtureRequest, namespaces: None,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, NodeFiles, ServeProcess]]:
    mode = str(request.param)
    files, process = start_edge(tmp_path_factory.mktemp(f"offload-{mode}"), mode)
    try:
        yield mode, files, process
    finally:
        log = stop_edge(process)
        assert "Traceback" not in log.split("stopping")[0], log[-3000:]
        assert "pref 49000" not in lab.filters("e-cli") + lab.filters("e-pee"), "filter left after stop"


def test_uclient_over_channels_loses_nothing_and_user_space_sees_only_stun(
        edge: tuple[str, NodeFiles, ServeProcess]) -> None:
    mode, files, process = edge
    attached = lab.filters("e-cli") + lab.filters("e-pee")
    assert ("turn_offload" in attached) == (mode == "on"), attached
    assert f"kernel offload: {'on' if mode == 'on' else 'off'}" in process.stderr()
    assert ("native forwarder: on" in process.stderr()) == (mode == "native")
    sessions, messages = 4, 400
    command = uclient_command(files.port("edge", "turn_udp_port"), server_host=lab.EDGE_CLIENT_SIDE, secret=SECRET,
                              user="offload", peer_host=lab.PEER, peer_port=PEER_PORT, sessions=sessions,
                              messages=messages, length=170, interval_ms=5, no_rtcp=True)
    result = UclientProcess([*lab.prefix("client"), *command], timeout=40).wait()
    assert result.completed and result.sent == sessions * messages, result.describe()
    assert result.lost == 0 and result.received == result.sent, result.describe()
    values = wait_metric(files, OFF_TO_CLIENT if mode in FAST else TO_CLIENT, result.received)
    assert values[TO_PEER] >= result.sent and values[TO_CLIENT] >= result.received, values
    status = json.loads(lab.run(*lab.prefix("edge"), "curl", "-s", "--max-time", "5",
                                f"http://127.0.0.1:{files.port('web', 'http_port')}/v1/status").stdout)
    offload = status["kernel_offload"]  # the status page's and `umedge status`'s view
    assert offload["mode"] == ("on" if mode == "on" else "off") and offload["active"] == (mode == "on"), offload
    assert offload["devices"] == (["e-cli", "e-pee"] if mode == "on" else []), offload
    assert offload["native"]["active"] == (mode == "native"), offload
    if mode in FAST:
        # Every relayed datagram was the fast path's: the engine relayed none (total - offloaded), only answered STUN.
        assert values[OFF_TO_PEER] == values[TO_PEER] and values[OFF_TO_CLIENT] == values[TO_CLIENT], values
    else:
        assert values[OFF_TO_PEER] == 0 and values[OFF_TO_CLIENT] == 0
    assert values["umedge_turn_offload_active"] == (1.0 if mode == "on" else 0.0)
    assert values["umedge_turn_native_forwarder_active"] == (1.0 if mode == "native" else 0.0)


def test_malformed_unbound_indications_and_deallocation(edge: tuple[str, NodeFiles, ServeProcess]) -> None:
    """Length > payload: dropped (in the kernel with "on", by the engine otherwise); an unbound channel and Send
    indications reach the engine and get the RFC's treatment (dropped; Data indications back); a Refresh to 0
    removes the entries."""
    mode, files, _ = edge
    before = metrics(files)
    script = client_script("scenario", lab.EDGE_CLIENT_SIDE, str(files.port("edge", "turn_udp_port")), lab.PEER,
                           str(PEER_PORT), SECRET)
    out, err = script.communicate(timeout=30)
    assert script.returncode == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result == {"echoes": 20, "malformed_echoes": 0, "unbound_echoes": 0, "data_indications": 5,
                      "echoes_after_dealloc": 0}, result
    after = wait_metric(files, MALFORMED if mode == "on" else NO_CHANNEL,
                        before.get(MALFORMED if mode == "on" else NO_CHANNEL, 0) + (20 if mode == "on" else 60))
    malformed = after.get(MALFORMED, 0) - before.get(MALFORMED, 0)
    unbound = after[NO_CHANNEL] - before.get(NO_CHANNEL, 0)
    if mode == "on":
        assert malformed == 20, after  # dropped and counted in the kernel, never seen by user space
        assert unbound >= 40, after  # the unbound channel (20) and the ChannelData after the Refresh to 0 (20)
        assert after[OFF_TO_PEER] - before[OFF_TO_PEER] >= 20
        assert after["umedge_turn_offload_channels"] == 0, after  # the deallocation took its entries
    else:
        assert malformed == 0 and unbound >= 60, after  # the engine: malformed, unbound, after the Refresh
    if mode == "native":
        assert after[OFF_TO_PEER] - before[OFF_TO_PEER] >= 20 and after[CHANNELS[mode]] == 0, after


def test_checksums_hold_when_every_receiver_verifies_them(edge: tuple[str, NodeFiles, ServeProcess]) -> None:
    """With checksum offload off on every veth, the client and the peer check each UDP checksum in software:
    the kernel's incremental updates (odd payload length, header stripped and added) must be exact."""
    mode, files, _ = edge
    lab.checksum_offload(False)
    try:
        before = {host: lab.udp_checksum_errors(host) for host in ("client", "peer")}
        script = client_script("scenario", lab.EDGE_CLIENT_SIDE, str(files.port("edge", "turn_udp_port")), lab.PEER,
                               str(PEER_PORT), SECRET)
        out, err = script.communicate(timeout=30)
        assert script.returncode == 0, err
        result = json.loads(out.strip().splitlines()[-1])
        assert result["echoes"] == 20 and result["data_indications"] == 5, result
        assert {host: lab.udp_checksum_errors(host) for host in ("client", "peer")} == before
    finally:
        lab.checksum_offload(True)


@pytest.mark.parametrize("mode", MODES)
def test_an_expired_permission_stops_the_kernel_within_a_second_with_the_node_stopped(
        mode: str, namespaces: None, tmp_path: Path) -> None:
    lifetime = 2
    files, process = start_edge(tmp_path, mode, permission_lifetime=lifetime)
    try:
        script = client_script("expiry", lab.EDGE_CLIENT_SIDE, str(files.port("edge", "turn_udp_port")),
                               lab.PEER, str(PEER_PORT), SECRET, "4.5")
        assert script.stdout is not None
        assert script.stdout.readline().strip() == "bound", script.stderr.read() if script.stderr else ""
        stopped = time.monotonic()
        process.proc.send_signal(signal.SIGSTOP)  # user space paused: only the kernel can relay or stop
        try:
            if mode == "on":  # resumed while the client still sends: its queue holds nothing the kernel dropped
                time.sleep(max(0.0, stopped + lifetime + 1.5 - time.monotonic()))
                process.proc.send_signal(signal.SIGCONT)
            out, err = script.communicate(timeout=20)
        finally:
            process.proc.send_signal(signal.SIGCONT)
        echoes = json.loads(out.strip().splitlines()[-1])["echoes"]
        while_stopped = [t for t in echoes if 0.3 < t < lifetime - 0.2]
        if mode == "on":
            assert len(while_stopped) > 50, echoes  # ~100/s relayed by the kernel alone
        else:
            assert while_stopped == [], echoes  # user space relays, and it is stopped
        assert not [t for t in echoes if t > lifetime + 1.0], echoes  # nothing after expiry + 1 s
        if mode == "on":  # dropped in the kernel after the expiry, counted
            values = wait_metric(files, "umedge_turn_dropped_total{reason=\"kernel_expired\"}", 50)
            assert values['umedge_turn_dropped_total{reason="kernel_expired"}'] >= 50, values
    finally:
        stop_edge(process)


@pytest.mark.parametrize("mode", FAST)
def test_an_allocation_over_its_bandwidth_cap_leaves_the_fast_path(mode: str, namespaces: None,
                                                                   tmp_path: Path) -> None:
    """The fast path relays a burst; the engine sees it was over allocation_bandwidth_kbps at its next tick and
    takes the allocation off the fast path, so the engine relays it from then on (and enforces the cap)."""
    files, process = start_edge(tmp_path, mode, allocation_bandwidth_kbps=200)  # 25,000 bytes/s
    try:
        script = client_script("burst", lab.EDGE_CLIENT_SIDE, str(files.port("edge", "turn_udp_port")), lab.PEER,
                               str(PEER_PORT), SECRET)
        out, err = script.communicate(timeout=30)
        assert script.returncode == 0, err
        result = json.loads(out.strip().splitlines()[-1])
        values = wait_metric(files, "umedge_turn_offload_bandwidth_refusals_total", 1)
        assert values["umedge_turn_offload_bandwidth_refusals_total"] == 1, values
        assert values[CHANNELS[mode]] == 0, values
        assert values[OFF_TO_PEER] >= 250, values  # the burst went the fast way (~51 kB in well under 1 s)
        assert result["burst_echoes"] >= 250 and result["later_echoes"] == 10, result
        assert values[TO_PEER] - values[OFF_TO_PEER] >= 10, values  # the later ones went through user space
    finally:
        stop_edge(process)


def test_a_killed_nodes_filter_is_removed_by_the_next_start(namespaces: None, tmp_path: Path) -> None:
    files, first = start_edge(tmp_path / "a", "on")
    old = f"handle {hex(first.proc.pid)} "
    first.proc.kill()
    first.kill()
    assert old in lab.filters("e-cli"), "the killed node's filter is still attached (as after a crash)"
    files, second = start_edge(tmp_path / "b", "on")
    try:
        attached = lab.filters("e-cli")
        assert old not in attached and f"handle {hex(second.proc.pid)} " in attached, attached
        assert "removed what a stopped node left" in second.stderr()
    finally:
        stop_edge(second)
    assert "turn_offload" not in lab.filters("e-cli") + lab.filters("e-pee")


@pytest.mark.parametrize("mode", FAST)
def test_relay_worker_processes_each_attach_their_own_and_clean_up(mode: str, namespaces: None,
                                                                   tmp_path: Path) -> None:
    """[edge] workers = 2: two processes share the TURN port (SO_REUSEPORT), each with its own fast path (for the
    kernel: program, maps and filter, handle = its pid; unmatched packets go on to the next filter), so both
    relay; both detach on stop."""
    files, process = start_edge(tmp_path, mode, workers=2)
    try:
        attached = lab.filters("e-cli")
        assert attached.count("turn_offload") == (2 if mode == "on" else 0), attached
        command = uclient_command(files.port("edge", "turn_udp_port"), server_host=lab.EDGE_CLIENT_SIDE,
                                  secret=SECRET, user="workers", peer_host=lab.PEER, peer_port=PEER_PORT, sessions=4,
                                  messages=200, length=170, interval_ms=5, no_rtcp=True)
        result = UclientProcess([*lab.prefix("client"), *command], timeout=40).wait()
        assert result.completed and result.lost == 0 and result.received == 800, result.describe()
        time.sleep(1.3)  # the main process's share (the kernel decides which process a client lands on)
        values = metrics(files)
        assert values[OFF_TO_PEER] == values[TO_PEER] and values[OFF_TO_CLIENT] == values[TO_CLIENT], values
    finally:
        stop_edge(process)
    assert "turn_offload" not in lab.filters("e-cli") + lab.filters("e-pee")


def test_on_fails_start_up_with_one_line_when_it_cannot(namespaces: None, tmp_path: Path) -> None:
    files = write_config(tmp_path, {"edge": {"kernel_offload": "on", "listen_address": "0.0.0.0",
                                             "auth_secrets": [SECRET]}, "node": {"roles": ["edge"]}})
    done = subprocess.run([*lab.prefix("edge"), sys.executable, "-m", "edge.node.cli", "serve", "--config",
                           str(files.path)], capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if line.startswith("umedge:")]
    assert lines == ['umedge: cannot start: kernel offload ([edge] kernel_offload = "on"): [edge] listen_address '
                     "must be a specific IPv4 address (is '0.0.0.0')"], done.stderr
    assert "Traceback" not in done.stderr
