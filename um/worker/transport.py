"""Media transports of a call: direct UDP, a TURN relay on the edge, or ICE over the edge's relay.

Every transport exposes the same small surface: `local` (the address the
SDP advertises), `on_packet` (set by the media session; called with each
datagram, RTP or RTCP), `send_rtp`/`send_rtcp`, `set_remote` and `close`.
Host sockets bind inside `[worker] rtp_port_min..rtp_port_max`.

- DirectTransport: one UDP socket on the worker's address; RTP goes straight
  to the far end (media_via_edge = false).
- RelayTransport: one UDP socket towards the edge's TURN server; an
  allocation there (aioice's TURN client protocol) and a channel (which is
  also the permission, RFC 8656 §12) to the far end's SDP address, so every
  packet to and from a plain gateway crosses the edge. The SDP advertises
  the relayed address. Sending is one ChannelData write, no task per packet.
- IceTransport: aioice's ICE agent, relay-only (RFC 8445 with the
  transport policy of RFC 9429 §3.5.3), its relay allocated from a socket
  in the port range; used when the far end offers ICE.
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
from aioice import Candidate, TransportPolicy
from aioice.ice import StunProtocol, candidate_foundation, candidate_priority
from aioice.turn import TurnClientUdpProtocol, TurnTransport
from twisted.logger import Logger

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
            sock.setblocking(False)
            for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                try:
                    sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)
                except OSError:
                    pass
            self.in_use.add(port)
            return sock
        raise OSError(f"no free UDP port in {self.low}-{self.high} on {host}")

    def release(self, port: int) -> None:
        self.in_use.discard(port)


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
        return {"kind": self.kind, "local": list(self.local), "host_port": self.host_port,
                "remote": list(self.remote_rtp) if self.remote_rtp else None, "packets_in": self.packets_in,
                "packets_out": self.packets_out}


class DirectTransport(MediaTransport):
    kind = "direct"

    def __init__(self, ports: PortRange, host: str, advertise: str | None = None) -> None:
        super().__init__()
        self.ports, self.host, self.advertise = ports, host, advertise or host
        self._transport: asyncio.DatagramTransport | None = None

    async def open(self) -> DirectTransport:
        sock = self.ports.bind(self.host)
        self.host_port = sock.getsockname()[1]
        loop = asyncio.get_running_loop()
        self._transport, _ = await loop.create_datagram_endpoint(lambda: _Datagram(self), sock=sock)
        self.local = (self.advertise, self.host_port)
        return self

    def send_rtp(self, data: bytes) -> None:
        if self._transport is not None and self.remote_rtp is not None and not self.closed:
            self._transport.sendto(data, self.remote_rtp)
            self.packets_out += 1

    def send_rtcp(self, data: bytes) -> None:
        if self._transport is not None and self.remote_rtcp is not None and not self.closed:
            self._transport.sendto(data, self.remote_rtcp)

    async def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self._transport is not None:
                self._transport.close()
            self.ports.release(self.host_port)


class _RelayReceiver(asyncio.DatagramProtocol):
    """aioice's TURN client hands relayed datagrams (ChannelData, Data indications) here."""

    def __init__(self, owner: RelayTransport) -> None:
        self.owner = owner

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.owner._received(data, addr)

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner.lost = True


async def _turn_client(ports: PortRange, host: str, server: Address, username: str, password: str,
                       lifetime: int = 600) -> tuple[socket.socket, TurnClientUdpProtocol]:
    """aioice's TURN client protocol on a UDP socket bound in the port range, connected to `server`."""
    sock = ports.bind(host)
    try:
        sock.connect(server)
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_datagram_endpoint(
            lambda: TurnClientUdpProtocol(server, username=username, password=password, lifetime=lifetime,
                                          channel_refresh_time=int(CHANNEL_REFRESH)), sock=sock)
        return sock, protocol
    except BaseException:
        ports.release(sock.getsockname()[1])
        sock.close()
        raise


class RelayTransport(MediaTransport):
    """A TURN allocation on the edge, channels to the far end's RTP (and RTCP) address."""

    kind = "relay"

    def __init__(self, ports: PortRange, host: str, server: Address, username: str, password: str) -> None:
        super().__init__()
        self.ports, self.host, self.server = ports, host, server
        self.username, self.password = username, password
        self._protocol: TurnClientUdpProtocol | None = None
        self._channels: dict[Address, int] = {}
        self._next_channel = 0x4000
        self._refresher: asyncio.Task[None] | None = None
        self.lost = False

    async def open(self, timeout: float = 5.0) -> RelayTransport:
        sock, protocol = await _turn_client(self.ports, self.host, self.server, self.username, self.password)
        self._protocol = protocol
        self.host_port = sock.getsockname()[1]
        try:
            self.local = tuple(await asyncio.wait_for(protocol.connect(), timeout))  # type: ignore[assignment]
        except BaseException:
            protocol.transport.close()
            self.ports.release(self.host_port)
            raise
        protocol.receiver = _RelayReceiver(self)
        return self

    async def _bind(self, peer: Address) -> int:
        assert self._protocol is not None
        number = self._channels.get(peer)
        if number is None:
            number = self._next_channel
            self._next_channel += 1
        await self._protocol.channel_bind(number, peer)
        self._channels[peer] = number
        # aioice's receive side maps channels to peers (and accepts Data indications from permitted peers).
        self._protocol.channel_to_peer[number] = peer
        self._protocol.peer_to_channel[peer] = number
        return number

    async def set_remote(self, rtp: Address, rtcp: Address) -> None:
        await super().set_remote(rtp, rtcp)
        await self._bind(rtp)
        if rtcp != rtp:
            await self._bind(rtcp)
        if self._refresher is None:
            self._refresher = asyncio.ensure_future(self._refresh())

    async def _refresh(self) -> None:
        while not self.closed:
            await asyncio.sleep(CHANNEL_REFRESH)
            for peer in list(self._channels):
                try:
                    await self._bind(peer)
                except Exception as error:  # noqa: BLE001
                    log.warn("TURN channel refresh to {peer} failed: {error}", peer=peer, error=repr(error))

    def _send(self, data: bytes, peer: Address | None) -> bool:
        protocol = self._protocol
        if protocol is None or peer is None or self.closed:
            return False
        number = self._channels.get(peer)
        if number is None:
            return False
        protocol.transport.sendto(struct.pack("!HH", number, len(data)) + data)
        return True

    def send_rtp(self, data: bytes) -> None:
        if self._send(data, self.remote_rtp):
            self.packets_out += 1

    def send_rtcp(self, data: bytes) -> None:
        self._send(data, self.remote_rtcp)

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._refresher is not None:
            self._refresher.cancel()
        if self._protocol is not None:
            try:
                await asyncio.wait_for(self._protocol.delete(), 2.0)  # Refresh with LIFETIME 0
            except (TimeoutError, Exception):  # noqa: BLE001 - it expires on the edge anyway
                self._protocol.transport.close()
        self.ports.release(self.host_port)


class _RangeIceConnection(aioice.Connection):
    """aioice's ICE agent, relay-only, with its TURN socket in the port range and packets handed over directly."""

    def __init__(self, owner: IceTransport, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.owner = owner

    async def get_component_candidates(self, component: int, addresses: list[str],
                                       timeout: int = 5) -> list[Candidate]:
        owner = self.owner
        assert self.turn_server is not None and self.turn_username and self.turn_password
        sock, inner = await _turn_client(owner.ports, owner.host, self.turn_server, self.turn_username,
                                         self.turn_password)
        owner.host_port = sock.getsockname()[1]
        turn_transport = TurnTransport(inner)
        protocol = StunProtocol(self)
        try:
            await asyncio.wait_for(turn_transport._connect(protocol), timeout)
        except BaseException:
            inner.transport.close()
            owner.ports.release(owner.host_port)
            raise
        relayed = turn_transport.get_extra_info("sockname")
        mapped = turn_transport.get_extra_info("related_address")
        protocol.local_candidate = Candidate(
            foundation=candidate_foundation("relay", "udp", relayed[0]), component=component, transport="udp",
            priority=candidate_priority(component, "relay"), host=relayed[0], port=relayed[1], type="relay",
            related_address=mapped[0] if mapped else None, related_port=mapped[1] if mapped else None)
        self._protocols.append(protocol)
        return [protocol.local_candidate]

    def data_received(self, data: bytes, component: int) -> None:
        self.owner._received(data, None)


def _to_aioice(candidate: IceCandidate) -> Candidate:
    return Candidate(foundation=candidate.foundation, component=candidate.component, transport=candidate.transport,
                     priority=candidate.priority, host=candidate.host, port=candidate.port, type=candidate.type,
                     related_address=candidate.related_address, related_port=candidate.related_port)


def _from_aioice(candidate: Candidate) -> IceCandidate:
    return IceCandidate(candidate.foundation, candidate.component, candidate.transport, candidate.priority,
                        candidate.host, candidate.port, candidate.type, candidate.related_address,
                        candidate.related_port)


class IceTransport(MediaTransport):
    kind = "ice"

    def __init__(self, ports: PortRange, host: str, server: Address, username: str, password: str,
                 controlling: bool = False) -> None:
        super().__init__()
        self.ports, self.host = ports, host
        self.connection = _RangeIceConnection(self, ice_controlling=controlling, components=1, turn_server=server,
                                              turn_username=username, turn_password=password,
                                              transport_policy=TransportPolicy.RELAY, use_ipv6=False)
        self.connected = asyncio.get_event_loop().create_future()
        self._task: asyncio.Task[None] | None = None

    async def open(self) -> IceTransport:
        await self.connection.gather_candidates()
        candidate = self.connection.get_default_candidate(1)
        if candidate is None:
            raise ConnectionError("no relay candidate from the edge")
        self.local = (candidate.host, candidate.port)
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
                await self.connection.add_remote_candidate(_to_aioice(candidate))
            await self.connection.add_remote_candidate(None)
            await self.connection.connect()
            if not self.connected.done():
                self.connected.set_result(True)
        except Exception as error:  # noqa: BLE001
            log.warn("ICE failed: {error}", error=repr(error))
            if not self.connected.done():
                self.connected.set_result(False)

    def _pair(self) -> Any:
        return self.connection._nominated.get(1)

    def send_rtp(self, data: bytes) -> None:
        pair = self._pair()
        if pair is not None and not self.closed:
            pair.protocol.transport.sendto(data, pair.remote_addr)
            self.packets_out += 1

    send_rtcp = send_rtp  # ICE calls are rtcp-mux (RFC 8843 practice); RTCP shares the pair

    @property
    def selected(self) -> tuple[Address, Address] | None:
        pair = self._pair()
        return (pair.local_addr, pair.remote_addr) if pair is not None else None

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
        self.ports.release(self.host_port)


def ice_credentials() -> tuple[str, str]:
    return secrets.token_hex(4), secrets.token_hex(16)
