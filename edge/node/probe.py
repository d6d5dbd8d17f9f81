"""`umedge probe`: can media cross to this edge from where the operator stands?

Step by step, each with ok/failed, latency and a plain-language reason:
STUN Binding over UDP, TCP and TLS (the reflexive address), a media token
(from the token API or minted from the shared secret), a TURN allocation
(the relayed address), and a round trip of datagrams from the probe through
the relay to an echo socket of its own and back. The echo first sends
towards the relay, as a phone behind NAT would, so a NAT in front of the
probe opens the way back. Exit code 0 only when the round trip worked.

The edge relays only to peers its policy permits, and by default it refuses
loopback and private networks (edge.turn.policy). A probe on the edge's own
host, or inside the same private network, has an echo address in one of them
and gets 403: the reason then names the network and the two ways out, an
`--echo-address` of this host the edge may relay to (the echo binds there,
and the edge is asked to relay to it as it is), or the edge's
`[edge] allowed_peer_networks`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
import ssl
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from typing import Any

from edge import stun
from edge.stun import Attr
from edge.tokens import mint
from edge.turn.policy import BUILTIN_DENIED

ROUND_TRIPS = 5


@dataclass
class Step:
    name: str
    ok: bool
    latency_ms: float | None = None
    detail: str = ""
    reason: str = ""  # why it failed, in words an operator acts on


@dataclass
class Report:
    edge: str
    steps: list[Step] = field(default_factory=list)

    @property
    def media_ok(self) -> bool:
        return any(s.name == "relay round trip" and s.ok for s in self.steps)

    def as_dict(self) -> dict[str, Any]:
        return {"edge": self.edge, "media_ok": self.media_ok, "steps": [asdict(s) for s in self.steps]}

    def text(self) -> str:
        lines = [f"umedge probe {self.edge}"]
        for s in self.steps:
            took = f" {s.latency_ms:.1f} ms" if s.latency_ms is not None else ""
            lines.append(f"  {'ok    ' if s.ok else 'FAILED'} {s.name}{took}"
                         + (f"  {s.detail}" if s.detail else "") + (f"  reason: {s.reason}" if s.reason else ""))
        lines.append("media can traverse the edge" if self.media_ok else "media cannot traverse the edge")
        return "\n".join(lines)


class ProbeError(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _error_reason(message: stun.Message) -> str:
    code, phrase = message.error_code() or (0, "")
    return {401: "401 bad token (wrong secret, altered or expired)", 403: "403 peer denied by the edge's policy",
            437: "437 allocation mismatch", 486: "486 allocation quota reached",
            508: "508 edge at capacity"}.get(code, f"{code} {phrase}")


# What each network the edge denies by default is (edge.turn.policy.BUILTIN_DENIED).
DENIED_KINDS = {
    "0.0.0.0/8": "'this network'", "127.0.0.0/8": "loopback", "169.254.0.0/16": "link-local",
    "224.0.0.0/4": "multicast", "255.255.255.255/32": "broadcast", "10.0.0.0/8": "private, RFC 1918",
    "172.16.0.0/12": "private, RFC 1918", "192.168.0.0/16": "private, RFC 1918",
    "100.64.0.0/10": "carrier-grade NAT, RFC 6598", "192.0.0.0/24": "IETF protocol assignments",
    "198.18.0.0/15": "benchmarking", "240.0.0.0/4": "reserved", "::/128": "unspecified", "::1/128": "loopback",
    "fe80::/10": "link-local", "ff00::/8": "multicast", "fc00::/7": "unique local",
}


def peer_denied_reason(echo_ip: str, echo_address_given: bool) -> str:
    """The 403 on the echo's permission in plain words: which network, and how to probe anyway."""
    ip = ipaddress.ip_address(echo_ip)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    network = next((n for n in BUILTIN_DENIED if n.version == ip.version and ip in n), None)
    whose = "the --echo-address" if echo_address_given else "the echo address (as the edge saw it)"
    if network is None:
        where = (f"{whose} {ip} is not in a network the edge denies by default, so the edge's "
                 "[edge] denied_peer_networks lists it or it is one of the edge's own addresses")
        advice = "pass --echo-address with another address of this host that the edge may relay to"
    else:
        where = (f"{whose} {ip} is in {network} ({DENIED_KINDS.get(str(network), 'reserved')}), a network "
                 "the edge refuses to relay to by default")
        advice = ("pass --echo-address with an address of this host outside the denied networks (one the "
                  "edge reaches, e.g. a public one), or on the edge add the network to [edge] "
                  f"allowed_peer_networks (e.g. \"{ipaddress.ip_network(ip)}\"; it lets every relay reach "
                  "it, so only for a test or an internal network you mean to open)")
    return f"403 peer denied by the edge's policy: {where}. To probe from here anyway, {advice}"


# --- STUN over the three transports ------------------------------------------------------------

class _Udp(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.queue.put_nowait((data, addr[:2]))


async def _udp_request(transport: asyncio.DatagramTransport, queue: asyncio.Queue, message: stun.Message,
                       server: tuple[str, int], timeout: float, key: bytes | None = None) -> stun.Message:
    wire = message.encode(key, fingerprint=True) if key else message.encode(fingerprint=True)
    deadline = time.monotonic() + timeout
    wait = 0.25
    while time.monotonic() < deadline:
        transport.sendto(wire, server)
        try:
            while True:
                data, _ = await asyncio.wait_for(queue.get(), min(wait, max(0.01, deadline - time.monotonic())))
                try:
                    reply = stun.decode(data)
                except stun.StunDecodeError:
                    continue
                if reply.transaction_id == message.transaction_id:
                    return reply
        except TimeoutError:
            wait = min(wait * 2, 2.0)  # retransmit, as RFC 8489 §6.2.1 backs off
    raise ProbeError("timeout: no answer (UDP port blocked or edge down)")


async def _stream_binding(host: str, port: int, context: ssl.SSLContext | None, timeout: float,
                          server_name: str | None) -> stun.Message:
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=context, server_hostname=server_name if context else None),
            timeout)
    except ssl.SSLCertVerificationError as error:
        raise ProbeError(f"certificate untrusted ({error.verify_message})") from None
    except (TimeoutError, ConnectionRefusedError, OSError) as error:
        raise ProbeError(f"port blocked or closed ({type(error).__name__})") from None
    try:
        request = stun.Message(stun.BINDING, stun.REQUEST)
        writer.write(request.encode(fingerprint=True))
        header = await asyncio.wait_for(reader.readexactly(20), timeout)
        body = await asyncio.wait_for(reader.readexactly(int.from_bytes(header[2:4], "big")), timeout)
        return stun.decode(header + body)
    except (TimeoutError, asyncio.IncompleteReadError, OSError) as error:
        raise ProbeError(f"no STUN answer ({type(error).__name__})") from None
    finally:
        writer.close()


async def _timed(report: Report, name: str, coroutine: Any) -> Any:
    started = time.monotonic()
    try:
        result = await coroutine
    except ProbeError as error:
        report.steps.append(Step(name, False, reason=error.reason))
        return None
    report.steps.append(Step(name, True, (time.monotonic() - started) * 1000))
    return result


# --- the token -------------------------------------------------------------------------------------

def _token_from_url(url: str, identity: str, api_key: str | None, context: ssl.SSLContext) -> tuple[str, str]:
    request = urllib.request.Request(url, data=json.dumps({"identity": identity, "ttl": 600}).encode(),
                                     headers={"Content-Type": "application/json",
                                              **({"Authorization": f"Bearer {api_key}"} if api_key else {})})
    try:
        with urllib.request.urlopen(request, context=context, timeout=5) as answer:
            body = json.loads(answer.read())
    except urllib.error.HTTPError as error:
        raise ProbeError(f"token API answered {error.code} ({error.reason})") from None
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        if isinstance(reason, ssl.SSLCertVerificationError):
            raise ProbeError("token API certificate untrusted (pass --ca)") from None
        raise ProbeError(f"token API unreachable ({reason})") from None
    return body["username"], body["password"]


# --- the probe -------------------------------------------------------------------------------------

async def probe(edge: str, udp_port: int, tcp_port: int, tls_port: int, realm: str, timeout: float,
                ca_file: str | None, secret: str | None, token_url: str | None, api_key: str | None,
                identity: str, echo_address: str | None = None) -> Report:
    """`echo_address`: the address the edge relays to, where the echo socket binds (default: any
    address, and the edge is asked to relay to the echo's address as the edge sees it)."""
    report = Report(f"{edge} (udp {udp_port}, tcp {tcp_port}, tls {tls_port})")
    host = str(socket.getaddrinfo(edge.strip("[]"), udp_port, type=socket.SOCK_DGRAM)[0][4][0])
    wildcard = "::" if ":" in host else "0.0.0.0"  # bind in the edge's family: an IPv4 socket cannot reach ::1
    loop = asyncio.get_running_loop()
    client, client_proto = await loop.create_datagram_endpoint(_Udp, local_addr=(wildcard, 0))
    try:
        echo, echo_proto = await loop.create_datagram_endpoint(_Udp, local_addr=(echo_address or wildcard, 0))
    except OSError as error:
        client.close()
        report.steps.append(Step("echo socket", False, reason=(
            f"cannot bind the echo socket to --echo-address {echo_address} ({error.strerror}): "
            "give an address of this host")))
        return report
    try:
        server = (host, udp_port)
        binding = await _timed(report, "STUN over UDP", _udp_request(
            client, client_proto.queue, stun.Message(stun.BINDING, stun.REQUEST), server, timeout))
        if binding is not None:
            report.steps[-1].detail = "reflexive " + hostport(*binding.xor_address()[:2])
        tcp = await _timed(report, "STUN over TCP", _stream_binding(host, tcp_port, None, timeout, None))
        if tcp is not None:
            report.steps[-1].detail = "reflexive " + hostport(*tcp.xor_address()[:2])
        context = ssl.create_default_context(cafile=ca_file) if ca_file else ssl.create_default_context()
        tls = await _timed(report, "STUN over TLS", _stream_binding(host, tls_port, context, timeout, edge))
        if tls is not None:
            report.steps[-1].detail = "certificate trusted"
        token = await _timed(report, "media token", _token(secret, token_url, api_key, identity, context))
        if token is None or binding is None:
            return report
        family = 6 if ":" in str(echo.get_extra_info("sockname")[0]) else 4  # the relay must reach the echo
        relayed = await _timed(report, "TURN allocation", _allocate(
            client, client_proto.queue, server, realm, token, timeout, family))
        if relayed is None:
            return report
        relay_address, key, nonce = relayed
        report.steps[-1].detail = "relayed " + hostport(*relay_address)
        if await _timed(report, "relay round trip", _round_trip(
                client, client_proto.queue, echo, echo_proto.queue, server, relay_address, realm, token[0], key,
                nonce, timeout, echo_address)) is not None:
            report.steps[-1].detail = f"{ROUND_TRIPS} datagrams there and back"
        await _release(client, client_proto.queue, server, realm, token[0], key, nonce, timeout)
        return report
    finally:
        client.close()
        echo.close()


async def _token(secret: str | None, url: str | None, api_key: str | None, identity: str,
                 context: ssl.SSLContext) -> tuple[str, str]:
    if url:
        return await asyncio.get_running_loop().run_in_executor(None, _token_from_url, url, identity, api_key,
                                                                context)
    if secret:
        token = mint(secret, identity, 600, time.time())
        return token.username, token.password
    raise ProbeError("no token source: pass --token-from URL or --secret-file FILE")


def hostport(host: object, port: object) -> str:
    """host:port, an IPv6 address in brackets ([::1]:3478, not ::1:3478)."""
    text = str(host)
    return f"[{text}]:{port}" if ":" in text else f"{text}:{port}"


async def _allocate(client: Any, queue: asyncio.Queue, server: tuple[str, int], realm: str,
                    token: tuple[str, str], timeout: float, family: int = 4) -> tuple[tuple[str, int], bytes, bytes]:
    transport_attr = (Attr.REQUESTED_TRANSPORT, stun.encode_requested_transport(17))
    challenge = await _udp_request(client, queue, stun.Message(stun.ALLOCATE, stun.REQUEST, None, [transport_attr]),
                                   server, timeout)
    nonce = challenge.get(Attr.NONCE)
    realm_value = challenge.get(Attr.REALM) or realm.encode()
    if nonce is None:
        raise ProbeError("the edge did not challenge for credentials (not a TURN server?)")
    key = stun.long_term_key(token[0], realm_value, token[1])
    attributes = [transport_attr]
    if family == 6:  # RFC 8656 §18.11: an IPv6 relay, for an IPv6 echo
        attributes.append((Attr.REQUESTED_ADDRESS_FAMILY, b"\x02\x00\x00\x00"))
    request = stun.Message(stun.ALLOCATE, stun.REQUEST, None, [
        *attributes, (Attr.USERNAME, token[0].encode()), (Attr.REALM, realm_value), (Attr.NONCE, nonce)])
    reply = await _udp_request(client, queue, request, server, timeout, key)
    if reply.msg_class != stun.SUCCESS:
        if family == 6 and (reply.error_code() or (0, ""))[0] == 440:
            raise ProbeError("the edge has no IPv6 relay ([edge] relay_address_v6 empty); give --echo-address "
                             "an IPv4 address of this host to test its IPv4 relays")
        raise ProbeError(_error_reason(reply))
    return reply.xor_address(Attr.XOR_RELAYED_ADDRESS)[:2], key, nonce  # type: ignore[index]


async def _round_trip(client: Any, queue: asyncio.Queue, echo: Any, echo_queue: asyncio.Queue,
                      server: tuple[str, int], relay: tuple[str, int], realm: str, username: str, key: bytes,
                      nonce: bytes, timeout: float, given: str | None = None) -> bool:
    echo_address: tuple[str, int]
    if given:
        echo_address = (given, int(echo.get_extra_info("sockname")[1]))  # bound there, relayed to as it is
    else:
        # The echo's address as the edge sees it (through any NAT), learned with a Binding from the echo socket.
        binding = await _udp_request(echo, echo_queue, stun.Message(stun.BINDING, stun.REQUEST), server, timeout)
        ip, port = binding.xor_address()[:2]  # type: ignore[index]
        echo_address = (str(ip), int(port))
    permission = stun.Message(stun.CREATE_PERMISSION, stun.REQUEST, None, [])
    permission.attributes += [
        (Attr.XOR_PEER_ADDRESS, stun.encode_xor_address(echo_address[0], echo_address[1], permission.transaction_id)),
        (Attr.USERNAME, username.encode()), (Attr.REALM, realm.encode()), (Attr.NONCE, nonce)]
    reply = await _udp_request(client, queue, permission, server, timeout, key)
    if reply.msg_class != stun.SUCCESS:
        if (reply.error_code() or (0, ""))[0] == 403:
            raise ProbeError(peer_denied_reason(echo_address[0], bool(given)))
        raise ProbeError(_error_reason(reply))
    echo.sendto(b"open", relay)  # a NAT in front of the echo now lets the relay's datagrams in
    for index in range(ROUND_TRIPS):
        payload = f"umedge-probe-{index}-{time.monotonic_ns()}".encode()
        send = stun.Message(stun.SEND, stun.INDICATION, None, [])
        peer = stun.encode_xor_address(echo_address[0], echo_address[1], send.transaction_id)
        send.attributes += [(Attr.XOR_PEER_ADDRESS, peer), (Attr.DATA, payload)]
        client.sendto(send.encode(fingerprint=True), server)
        try:
            data, source = await asyncio.wait_for(echo_queue.get(), timeout)
            if data != payload:
                raise ProbeError("the echo got something else than was sent")
            echo.sendto(data, source)  # back to the relay
            while True:
                answer, _ = await asyncio.wait_for(queue.get(), timeout)
                indication = stun.decode(answer)
                if indication.method == stun.DATA and indication.get(Attr.DATA) == payload:
                    break
        except TimeoutError:
            raise ProbeError("timeout: datagrams did not come back through the relay "
                             "(relay ports blocked, or a firewall drops them)") from None
        except stun.StunDecodeError:
            raise ProbeError("malformed answer from the edge") from None
    return True


async def _release(client: Any, queue: asyncio.Queue, server: tuple[str, int], realm: str, username: str,
                   key: bytes, nonce: bytes, timeout: float) -> None:
    """Give the allocation back (Refresh, lifetime 0) rather than leave it to expire."""
    refresh = stun.Message(stun.REFRESH, stun.REQUEST, None, [
        (Attr.LIFETIME, stun.encode_lifetime(0)), (Attr.USERNAME, username.encode()),
        (Attr.REALM, realm.encode()), (Attr.NONCE, nonce)])
    try:
        await _udp_request(client, queue, refresh, server, min(timeout, 1.0), key)
    except ProbeError:
        pass  # it expires on its own
