"""Media transports of a call: direct UDP, a TURN relay on the edge, or ICE over the edge's relay.

Every transport exposes the same small surface: `local` (the address the
SDP advertises), `rtcp_port` (where RTCP is received: local port + 1, or the
RTP port itself with rtcp-mux), `on_packet` (set by the media session; called
with each datagram, RTP or RTCP), `send_rtp`/`send_rtcp`, `set_remote` and
`close`. Host sockets bind inside `[worker] rtp_port_min..rtp_port_max`.

Ports follow RFC 3550 §11: RTP on an even port, RTCP on the next odd one,
the two taken as a pair; only an offer with rtcp-mux (RFC 5761) puts both on
one port. Through the edge the pair is a TURN EVEN-PORT allocation with the
R bit and a second allocation redeeming its RESERVATION-TOKEN (RFC 8656
§7.1), so the relayed ports the SDP names follow the same rule.

- DirectTransport: one UDP socket on the worker's address; RTP goes straight
  to the far end (media_via_edge = false).
- RelayTransport: one UDP socket towards the edge's TURN server; an
  allocation there (aioice's TURN client protocol) and a channel (which is
  also the permission, RFC 8656 §12) to the far end's SDP address, so every
  packet to and from a plain gateway crosses the edge. The SDP advertises
  the relayed address. Sending is one ChannelData write, no task per packet.
- IceTransport: aioice's ICE agent, relay-only (RFC 8445 with the
  transport policy of RFC 9429 §3.5.3), its relays allocated from sockets
  in the port range; used when the far end offers ICE. Two components (RTP
  and RTCP, each with its relay candidate, both checked) unless the offer
  has rtcp-mux, then one.
"""

from __future__ import annotations

import asyncio
import random
import secrets
import socket
import struct
from collections.abc import Callable
from typing import Any

import aioice
from aioice import Candidate, TransportPolicy, stun
from aioice.ice import StunProtocol, candidate_foundation, candidate_priority
from aioice.turn import TurnClientUdpProtocol, TurnTransport
from twisted.logger import Logger

from um.worker import families, sdp
from um.worker.sdp import IceCandidate, IceParams

log = Logger(namespace="umedge.worker.transport")
Address = tuple[str, int]
CHANNEL_REFRESH = 240.0  # seconds: channels last 600 s, the permission they carry 300 s
SOCKET_BUFFER = 1 << 20


class PortRange:
    """Hands out UDP ports inside [low, high], starting at a random one, skipping ports in use."""

    def __init__(self, low: int, high: int) -> None:
        self.low, self.high = low, high
        self.in_use: set[int] = set()

    def bind(self, host: str, attempts: int = 64) -> socket.socket:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        span = self.high - self.low + 1
        start, failures = random.randrange(span), 0
        for offset in range(span):
            port = self.low + (start + offset) % span
            if port in self.in_use:
                continue
            sock = socket.socket(family, socket.SOCK_DGRAM)
            try:
                sock.bind((host, port))
            except OSError:
                sock.close()
                failures += 1
                if failures >= attempts:
                    break
                continue
            _prepare(sock)
            self.in_use.add(port)
            return sock
        raise OSError(f"no free UDP port in {self.low}-{self.high} on {host}")

    def bind_pair(self, host: str, pair: bool = True) -> tuple[socket.socket, socket.socket | None]:
        """An even port for RTP and, with `pair`, the odd port above it for RTCP (RFC 3550 §11)."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        low = self.low + (self.low % 2)
        top = self.high - (1 if pair else 0)  # the highest even port that still fits
        evens = (top - low) // 2 + 1 if top >= low else 0
        if evens <= 0:
            raise OSError(f"no even UDP port{' pair' if pair else ''} in {self.low}-{self.high}")
        start, failures = random.randrange(evens), 0
        for offset in range(evens):
            port = low + 2 * ((start + offset) % evens)
            if port in self.in_use or (pair and port + 1 in self.in_use):
                continue
            socks: list[socket.socket] = []
            try:
                for number in (port, port + 1) if pair else (port,):
                    sock = socket.socket(family, socket.SOCK_DGRAM)
                    socks.append(sock)
                    sock.bind((host, number))
            except OSError:
                for sock in socks:
                    sock.close()
                failures += 1
                if failures >= 64:
                    break
                continue
            for sock in socks:
                _prepare(sock)
                self.in_use.add(sock.getsockname()[1])
            return socks[0], socks[1] if pair else None
        raise OSError(f"no free even UDP port{' pair' if pair else ''} in {self.low}-{self.high} on {host}")

    def release(self, port: int) -> None:
        self.in_use.discard(port)


def _prepare(sock: socket.socket) -> None:
    sock.setblocking(False)
    for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        try:
            sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)
        except OSError:
            pass


class _Datagram(asyncio.DatagramProtocol):
    def __init__(self, owner: MediaTransport) -> None:
        self.owner = owner

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.owner._received(data, addr)

    def error_received(self, exc: Exception) -> None:
        self.owner.errors += 1


class MediaTransport:
    kind = "none"

    def __init__(self) -> None:
        self.local: Address = ("0.0.0.0", 0)
        self.rtcp_port = 0  # where RTCP arrives: local[1] + 1, or local[1] itself with rtcp-mux
        self.host_port = 0
        self.on_packet: Callable[[bytes], None] = lambda data: None
        self.remote_rtp: Address | None = None
        self.remote_rtcp: Address | None = None
        self.packets_in = self.packets_out = self.errors = 0
        self.closed = False

    def _received(self, data: bytes, addr: Any) -> None:
        self.packets_in += 1
        self.on_packet(data)

    async def set_remote(self, rtp: Address, rtcp: Address) -> None:
        self.remote_rtp, self.remote_rtcp = rtp, rtcp

    def send_rtp(self, data: bytes) -> None:
        raise NotImplementedError

    def send_rtcp(self, data: bytes) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        self.closed = True

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "local": list(self.local), "rtcp_port": self.rtcp_port,
                "host_port": self.host_port, "remote": list(self.remote_rtp) if self.remote_rtp else None,
                "packets_in": self.packets_in, "packets_out": self.packets_out}


class DirectTransport(MediaTransport):
    """Two UDP sockets on the worker's address: RTP on an even port, RTCP on the odd one above (one with mux)."""

    kind = "direct"

    def __init__(self, ports: PortRange, host: str, advertise: str | None = None, rtcp_mux: bool = False) -> None:
        super().__init__()
        self.ports, self.host, self.advertise = ports, host, advertise or host
        self.rtcp_mux = rtcp_mux
        self._transport: asyncio.DatagramTransport | None = None
        self._rtcp: asyncio.DatagramTransport | None = None

    async def open(self) -> DirectTransport:
        rtp, rtcp = self.ports.bind_pair(self.host, pair=not self.rtcp_mux)
        self.host_port = rtp.getsockname()[1]
        loop = asyncio.get_running_loop()
        try:
            self._transport, _ = await loop.create_datagram_endpoint(lambda: _Datagram(self), sock=rtp)
            if rtcp is not None:
                self._rtcp, _ = await loop.create_datagram_endpoint(lambda: _Datagram(self), sock=rtcp)
        except BaseException:
            for sock in (rtp, rtcp):
                if sock is not None:
                    sock.close()
            self._release()
            raise
        self.local = (self.advertise, self.host_port)
        self.rtcp_port = self.host_port + 1 if rtcp is not None else self.host_port
        return self

    def send_rtp(self, data: bytes) -> None:
        if self._transport is not None and self.remote_rtp is not None and not self.closed:
            self._transport.sendto(data, self.remote_rtp)
            self.packets_out += 1

    def send_rtcp(self, data: bytes) -> None:
        if self.remote_rtcp is None or self.closed:
            return
        # RTCP leaves from the port it is received on: the odd one, or the RTP port when muxed.
        out = self._rtcp if self._rtcp is not None and self.remote_rtcp != self.remote_rtp else self._transport
        if out is not None:
            out.sendto(data, self.remote_rtcp)

    def _release(self) -> None:
        self.ports.release(self.host_port)
        if not self.rtcp_mux:
            self.ports.release(self.host_port + 1)

    async def close(self) -> None:
        if not self.closed:
            self.closed = True
            for transport in (self._transport, self._rtcp):
                if transport is not None:
                    transport.close()
            self._release()


class _RelayReceiver(asyncio.DatagramProtocol):
    """aioice's TURN client hands relayed datagrams (ChannelData, Data indications) here."""

    def __init__(self, owner: RelayTransport) -> None:
        self.owner = owner

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.owner._received(data, addr)

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner.lost = True


def _register_stun_attributes() -> None:
    """aioice's STUN codec has no EVEN-PORT or RESERVATION-TOKEN (RFC 8656 §18): add them to its tables."""
    for entry in ((0x0017, "REQUESTED-ADDRESS-FAMILY", stun.pack_bytes, stun.unpack_bytes),
                  (0x0018, "EVEN-PORT", stun.pack_bytes, stun.unpack_bytes),
                  (0x0022, "RESERVATION-TOKEN", stun.pack_bytes, stun.unpack_bytes)):
        stun.ATTRIBUTES_BY_TYPE.setdefault(entry[0], entry)
        stun.ATTRIBUTES_BY_NAME.setdefault(entry[1], entry)


_register_stun_attributes()


class PairTurnClient(TurnClientUdpProtocol):
    """aioice's TURN client whose Allocate asks for an even relayed port (EVEN-PORT, R bit to reserve the next
    one) or redeems a RESERVATION-TOKEN for that next, odd port."""

    def __init__(self, *args: Any, even: bool | None = None, reserve: bool = False,
                 token: bytes | None = None, family: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.even, self.reserve, self.redeem = even, reserve, token
        self.family = family  # 6: REQUESTED-ADDRESS-FAMILY IPv6 (RFC 8656 §18.11); else the default, IPv4
        self.token: bytes | None = None  # the RESERVATION-TOKEN the server gave us

    async def request_with_retry(self, request: stun.Message) -> tuple[stun.Message, tuple[str, int]]:
        allocate = request.message_method == stun.Method.ALLOCATE and request.message_class == stun.Class.REQUEST
        if allocate:
            if self.redeem is not None:
                request.attributes["RESERVATION-TOKEN"] = self.redeem
            elif self.even:
                request.attributes["EVEN-PORT"] = b"\x80" if self.reserve else b"\x00"
            if self.family == families.IPV6 and self.redeem is None:  # a redeemed token has its family
                request.attributes["REQUESTED-ADDRESS-FAMILY"] = b"\x02\x00\x00\x00"
        response, addr = await super().request_with_retry(request)
        if allocate:
            token = response.attributes.get("RESERVATION-TOKEN")
            self.token = token if isinstance(token, bytes) and len(token) == 8 else None
        return response, addr


async def _turn_client(ports: PortRange, host: str, server: Address, username: str, password: str,
                       lifetime: int = 600, *, even: bool = False, reserve: bool = False,
                       token: bytes | None = None, family: int | None = None) -> tuple[socket.socket, PairTurnClient]:
    """A TURN client protocol on a UDP socket bound in the port range, connected to `server`."""
    sock = ports.bind(host)
    try:
        sock.connect(server)
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_datagram_endpoint(
            lambda: PairTurnClient(server, username=username, password=password, lifetime=lifetime,
                                   channel_refresh_time=int(CHANNEL_REFRESH), even=even, reserve=reserve,
                                   token=token, family=family), sock=sock)
        return sock, protocol
    except BaseException:
        ports.release(sock.getsockname()[1])
        sock.close()
        raise


def _refuse_family(error: stun.TransactionFailed, family: int | None) -> None:
    """The edge's 440 (Address Family not Supported, RFC 8656 §18.11) to the family the offer needs is the
    caller's 488 with a Warning naming it, not a 503: another edge would not do better."""
    code = error.response.attributes.get("ERROR-CODE")
    if isinstance(code, tuple) and code[0] == 440 and family is not None:
        wanted = families.name(family)
        raise sdp.SdpError(488, f"Not Acceptable Here - no {wanted} media relay",
                           warning=f"incompatible network address family: the edge has no {wanted} "
                                   "relay for this offer's media address") from None


class _Allocation:
    """One TURN allocation of a relay transport: its client protocol, host port and channels."""

    def __init__(self, sock: socket.socket, protocol: PairTurnClient) -> None:
        self.protocol = protocol
        self.host_port = sock.getsockname()[1]
        self.relayed: Address = ("0.0.0.0", 0)
        self.channels: dict[Address, int] = {}


class RelayTransport(MediaTransport):
    """TURN allocations on the edge (an even relayed port for RTP, the odd one above for RTCP unless muxed),
    channels to the far end's RTP and RTCP addresses."""

    kind = "relay"

    def __init__(self, ports: PortRange, host: str, server: Address, username: str, password: str,
                 rtcp_mux: bool = False) -> None:
        super().__init__()
        self.ports, self.host, self.server = ports, host, server
        self.username, self.password = username, password
        self.rtcp_mux = rtcp_mux
        self._rtp: _Allocation | None = None
        self._rtcp: _Allocation | None = None
        self._next_channel = 0x4000
        self._refresher: asyncio.Task[None] | None = None
        self.lost = False
        self.family = families.requested()  # the far end's family, noted by the handler for this call

    async def _allocate(self, timeout: float, **pairing: Any) -> _Allocation:
        sock, protocol = await _turn_client(self.ports, self.host, self.server, self.username, self.password,
                                            family=self.family, **pairing)
        allocation = _Allocation(sock, protocol)
        try:
            allocation.relayed = tuple(await asyncio.wait_for(protocol.connect(), timeout))  # type: ignore[assignment]
        except stun.TransactionFailed as error:
            protocol.transport.close()
            self.ports.release(allocation.host_port)
            _refuse_family(error, self.family)
            raise
        except BaseException:
            protocol.transport.close()
            self.ports.release(allocation.host_port)
            raise
        protocol.receiver = _RelayReceiver(self)
        return allocation

    async def open(self, timeout: float = 5.0) -> RelayTransport:
        self._rtp = rtp = await self._allocate(timeout, even=True, reserve=not self.rtcp_mux)
        self.host_port = rtp.host_port
        self.local = rtp.relayed
        self.rtcp_port = rtp.relayed[1]
        if not self.rtcp_mux:
            try:
                if rtp.protocol.token is None:
                    raise ConnectionError("the TURN server reserved no RTCP port (no RESERVATION-TOKEN)")
                self._rtcp = await self._allocate(timeout, token=rtp.protocol.token)
            except BaseException:
                await self.close()
                raise
            self.rtcp_port = self._rtcp.relayed[1]
        return self

    async def _bind(self, allocation: _Allocation, peer: Address) -> int:
        protocol = allocation.protocol
        number = allocation.channels.get(peer)
        if number is None:
            number = self._next_channel
            self._next_channel += 1
        await protocol.channel_bind(number, peer)
        allocation.channels[peer] = number
        # aioice's receive side maps channels to peers (and accepts Data indications from permitted peers).
        protocol.channel_to_peer[number] = peer
        protocol.peer_to_channel[peer] = number
        return number

    def _for_rtcp(self) -> _Allocation | None:
        """RTCP's allocation: the odd one, or RTP's when the far end muxes (its RTCP address is its RTP's)."""
        if self._rtcp is not None and self.remote_rtcp != self.remote_rtp:
            return self._rtcp
        return self._rtp

    async def set_remote(self, rtp: Address, rtcp: Address) -> None:
        await super().set_remote(rtp, rtcp)
        assert self._rtp is not None
        await self._bind(self._rtp, rtp)
        rtcp_allocation = self._for_rtcp()
        if rtcp_allocation is not None and (rtcp_allocation is not self._rtp or rtcp != rtp):
            await self._bind(rtcp_allocation, rtcp)
        if self._refresher is None:
            self._refresher = asyncio.ensure_future(self._refresh())

    async def _refresh(self) -> None:
        while not self.closed:
            await asyncio.sleep(CHANNEL_REFRESH)
            for allocation in (a for a in (self._rtp, self._rtcp) if a is not None):
                for peer in list(allocation.channels):
                    try:
                        await self._bind(allocation, peer)
                    except Exception as error:  # noqa: BLE001
                        log.warn("TURN channel refresh to {peer} failed: {error}", peer=peer, error=repr(error))

    @staticmethod
    def _send(allocation: _Allocation | None, data: bytes, peer: Address | None) -> bool:
        if allocation is None or peer is None:
            return False
        number = allocation.channels.get(peer)
        if number is None:
            return False
        allocation.protocol.transport.sendto(struct.pack("!HH", number, len(data)) + data)
        return True

    def send_rtp(self, data: bytes) -> None:
        if not self.closed and self._send(self._rtp, data, self.remote_rtp):
            self.packets_out += 1

    def send_rtcp(self, data: bytes) -> None:
        if not self.closed:
            self._send(self._for_rtcp(), data, self.remote_rtcp)

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._refresher is not None:
            self._refresher.cancel()
        for allocation in (self._rtp, self._rtcp):
            if allocation is None:
                continue
            try:
                await asyncio.wait_for(allocation.protocol.delete(), 2.0)  # Refresh with LIFETIME 0
            except (TimeoutError, Exception):  # noqa: BLE001 - it expires on the edge anyway
                allocation.protocol.transport.close()
            self.ports.release(allocation.host_port)


class _RangeIceConnection(aioice.Connection):
    """aioice's ICE agent, relay-only, with its TURN sockets in the port range and packets handed over directly.

    Component 1 (RTP) asks the edge for an even relayed port and, with two components, reserves the next one;
    component 2 (RTCP) redeems that reservation, so the candidates follow RFC 3550 §11 too.
    """

    def __init__(self, owner: IceTransport, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.owner = owner
        self._reservation: asyncio.Future[bytes | None] = asyncio.get_event_loop().create_future()

    async def get_component_candidates(self, component: int, addresses: list[str],
                                       timeout: int = 5) -> list[Candidate]:
        owner = self.owner
        assert self.turn_server is not None and self.turn_username and self.turn_password
        pairing: dict[str, Any] = {"even": True, "reserve": owner.components == 2}
        if component != 1:
            token = await asyncio.wait_for(asyncio.shield(self._reservation), timeout)
            pairing = {"token": token} if token is not None else {}
        try:
            sock, inner = await _turn_client(owner.ports, owner.host, self.turn_server, self.turn_username,
                                             self.turn_password, family=owner.family, **pairing)
        except BaseException:
            if component == 1 and not self._reservation.done():
                self._reservation.set_result(None)
            raise
        owner.host_ports.append(sock.getsockname()[1])
        if component == 1:
            owner.host_port = sock.getsockname()[1]
        turn_transport = TurnTransport(inner)
        protocol = StunProtocol(self)
        try:
            await asyncio.wait_for(turn_transport._connect(protocol), timeout)
        except BaseException as error:
            inner.transport.close()
            if component == 1 and not self._reservation.done():
                self._reservation.set_result(None)
            if isinstance(error, stun.TransactionFailed):
                _refuse_family(error, owner.family)
            raise
        if component == 1 and not self._reservation.done():
            self._reservation.set_result(inner.token)
        relayed = turn_transport.get_extra_info("sockname")
        mapped = turn_transport.get_extra_info("related_address")
        protocol.local_candidate = Candidate(
            foundation=candidate_foundation("relay", "udp", relayed[0]), component=component, transport="udp",
            priority=candidate_priority(component, "relay"), host=relayed[0], port=relayed[1], type="relay",
            related_address=mapped[0] if mapped else None, related_port=mapped[1] if mapped else None)
        self._protocols.append(protocol)
        return [protocol.local_candidate]

    def data_received(self, data: bytes, component: int) -> None:
        self.owner._received(data, component)


def _to_aioice(candidate: IceCandidate) -> Candidate:
    return Candidate(foundation=candidate.foundation, component=candidate.component, transport=candidate.transport,
                     priority=candidate.priority, host=candidate.host, port=candidate.port, type=candidate.type,
                     related_address=candidate.related_address, related_port=candidate.related_port)


def _from_aioice(candidate: Candidate) -> IceCandidate:
    return IceCandidate(candidate.foundation, candidate.component, candidate.transport, candidate.priority,
                        candidate.host, candidate.port, candidate.type, candidate.related_address,
                        candidate.related_port)


class IceTransport(MediaTransport):
    """ICE through the edge's relay: one component with rtcp-mux, else two (RTP and RTCP, each checked)."""

    kind = "ice"

    def __init__(self, ports: PortRange, host: str, server: Address, username: str, password: str,
                 controlling: bool = False, rtcp_mux: bool = True) -> None:
        super().__init__()
        self.ports, self.host = ports, host
        self.components = 1 if rtcp_mux else 2
        self.family = families.requested()  # relay candidates of the offer's family (an IPv6-only far end)
        self.host_ports: list[int] = []
        self.rtcp_in = 0  # datagrams received on component 2
        self.connection = _RangeIceConnection(self, ice_controlling=controlling, components=self.components,
                                              turn_server=server, turn_username=username, turn_password=password,
                                              transport_policy=TransportPolicy.RELAY, use_ipv6=False)
        self.connected = asyncio.get_event_loop().create_future()
        self._task: asyncio.Task[None] | None = None

    def _received(self, data: bytes, addr: Any) -> None:
        if addr == 2:
            self.rtcp_in += 1
        super()._received(data, addr)

    async def open(self) -> IceTransport:
        try:
            await self.connection.gather_candidates()
        except BaseException:
            await self.close()  # the relays gathered so far, and their ports in the range
            raise
        candidate = self.connection.get_default_candidate(1)
        if candidate is None:
            raise ConnectionError("no relay candidate from the edge")
        self.local = (candidate.host, candidate.port)
        self.rtcp_port = candidate.port
        if self.components == 2:
            rtcp = self.connection.get_default_candidate(2)
            if rtcp is None:
                raise ConnectionError("no relay candidate for RTCP (component 2) from the edge")
            self.rtcp_port = rtcp.port
        return self

    @property
    def params(self) -> IceParams:
        return IceParams(self.connection.local_username, self.connection.local_password,
                         [_from_aioice(c) for c in self.connection.local_candidates])

    def start(self, remote: IceParams) -> None:
        """Add the far end's ICE parameters and run the checks in the background."""
        self.connection.remote_username, self.connection.remote_password = remote.ufrag, remote.pwd
        self._task = asyncio.ensure_future(self._connect(remote))

    async def _connect(self, remote: IceParams) -> None:
        try:
            for candidate in remote.candidates:
                if candidate.component <= self.components:
                    await self.connection.add_remote_candidate(_to_aioice(candidate))
            await self.connection.add_remote_candidate(None)
            await self.connection.connect()
            if not self.connected.done():
                self.connected.set_result(True)
        except Exception as error:  # noqa: BLE001
            log.warn("ICE failed: {error}", error=repr(error))
            if not self.connected.done():
                self.connected.set_result(False)

    def _pair(self, component: int = 1) -> Any:
        return self.connection._nominated.get(component)

    def send_rtp(self, data: bytes) -> None:
        pair = self._pair()
        if pair is not None and not self.closed:
            pair.protocol.transport.sendto(data, pair.remote_addr)
            self.packets_out += 1

    def send_rtcp(self, data: bytes) -> None:
        pair = self._pair(2) if self.components == 2 else self._pair()
        if pair is not None and not self.closed:
            pair.protocol.transport.sendto(data, pair.remote_addr)

    @property
    def selected(self) -> tuple[Address, Address] | None:
        pair = self._pair()
        return (pair.local_addr, pair.remote_addr) if pair is not None else None

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "components": self.components, "rtcp_in": self.rtcp_in,
                "rtcp_port": self.rtcp_port}

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._task is not None:
            self._task.cancel()
        try:
            await asyncio.wait_for(self.connection.close(), 3.0)
        except (TimeoutError, Exception):  # noqa: BLE001
            pass
        for port in self.host_ports:
            self.ports.release(port)


def ice_credentials() -> tuple[str, str]:
    return secrets.token_hex(4), secrets.token_hex(16)
