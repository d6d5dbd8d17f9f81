"""The UM Call Router (5060/5061): every call gets exactly one 302 to the right UM worker.

Per INVITE (RFC 3261 §8.2 order: method, then header inspection, then policy):

1. the peer must be a configured UM IP gateway (IP, CIDR, FQDN resolved with
   dnspython, or over TLS a certificate name); others get 403, and so do
   disabled gateways (no-new-calls gateways keep their OPTIONS keepalives);
2. the Request-URI user is a hunt group's pilot number, which selects the
   dial plan (no hunt group: 404); a secured dial plan needs MTLS (403);
3. the called mailbox: the diverting user (History-Info, else Diversion),
   else the To user; subscriber-access and auto-attendant numbers (or the
   pilot itself when it is one) go to any healthy mailbox server instead;
   an extension the directory does not know gets 404;
4. the mailbox server's UM service is asked for its active worker: in
   process when it is this node, else with an INVITE over TCP/MTLS to its
   5062/5063 that it answers with a 302; that Contact goes back to the
   gateway in our 302. Mailbox servers are probed with OPTIONS (interval and
   thresholds like Kamailio's dispatcher); dead ones are skipped, and when
   every candidate is down the answer is 503 with Retry-After.

OPTIONS from a gateway gets 200 (keepalive). The directory (dial plans,
mailboxes, servers; from the config and the file it names) is reloaded
every `reload_interval` seconds and on SIGHUP (um.services.CallRouterService).
"""

from __future__ import annotations

import ipaddress
import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger

from um.directory import LOCAL, DialPlan, Directory, Gateway, HuntGroup, MailboxServer
from um.mailbox import SERVER, MailboxService, refuse_method
from um.sip.headers import parse_addresses
from um.sip.message import Headers, Request, Response, make_response
from um.sip.stream import Peer
from um.sip.uri import SipUri, TelUri, UriError, bracket, contact_style, secure_contact

log = Logger(namespace="umedge.callrouter")
ALLOW = "INVITE, ACK, CANCEL, OPTIONS"
SUPPORTED_EXTENSIONS: frozenset[str] = frozenset()  # option tags we support in Require (none yet)


@dataclass
class ProbeSettings:
    interval: float = 10.0
    timeout: float = 3.0
    failure_threshold: int = 3   # consecutive failed probes before a server is down (ds_probing_threshold)
    success_threshold: int = 1   # consecutive answered probes before it is up again (ds_inactive_threshold)
    retry_after: int = 60        # Retry-After of the 503 when every candidate is down
    lookup_timeout: float = 3.0  # asking a remote UM service for its worker


@dataclass
class Health:
    up: bool = True
    failures: int = 0
    successes: int = 0
    last_status: str = "not probed"


class GatewayTable:
    """Which peer is which UM IP gateway; FQDN gateways match resolved addresses and certificate names."""

    def __init__(self, gateways: Iterable[Gateway]) -> None:
        self.gateways = tuple(gateways)
        self._by_ip: dict[str, Gateway] = {}
        self._networks: list[tuple[Any, Gateway]] = []
        self._by_name: dict[str, Gateway] = {}
        self._resolved: dict[str, Gateway] = {}
        for gateway in self.gateways:
            network = gateway.network
            if network is None:
                self._by_name[gateway.address.rstrip(".")] = gateway
            elif network.num_addresses == 1:
                self._by_ip[str(network.network_address)] = gateway
            else:
                self._networks.append((network, gateway))

    @property
    def fqdns(self) -> list[str]:
        return list(self._by_name)

    def set_resolved(self, resolved: dict[str, list[str]]) -> None:
        """FQDN -> addresses, as the resolver found them (replaces the previous answers)."""
        table = {}
        for name, addresses in resolved.items():
            gateway = self._by_name.get(name.rstrip(".").lower())
            if gateway is not None:
                for address in addresses:
                    table[address] = gateway
        self._resolved = table

    def match(self, peer: Peer) -> Gateway | None:
        host = peer.host
        found = self._by_ip.get(host) or self._resolved.get(host)
        if found is not None:
            return found
        if peer.cert_names:
            for name in peer.cert_names:
                found = self._by_name.get(name.rstrip("."))
                if found is not None:
                    return found
        if self._networks:
            try:
                address = ipaddress.ip_address(host)
            except ValueError:
                return None
            for network, gateway in self._networks:
                if address in network:
                    return gateway
        return None


@dataclass
class RouterState:
    """What a reload swaps at once."""

    directory: Directory
    hunt_groups: dict[str, list[HuntGroup]] = field(default_factory=dict)


def _user_of(value: str | None) -> tuple[str | None, str | None]:
    if not value:
        return None, None
    try:
        uri = parse_addresses(value)[0].uri
    except (UriError, IndexError):
        return None, None
    if isinstance(uri, SipUri):
        return uri.user, uri.host
    if isinstance(uri, TelUri):
        return uri.number, None
    return None, None


def diverting_user(request: Request, pilot: str | None) -> tuple[str | None, str | None]:
    """The user whose call was diverted to UM: History-Info (RFC 7044), else Diversion (RFC 5806)."""
    headers = request.headers
    history = headers.get_all("History-Info") if headers.get("History-Info") is not None else None
    if history:
        entries = []
        for value in history:
            try:
                entries.extend(parse_addresses(value))
            except UriError:
                continue
        for entry in reversed(entries):  # the last target before the pilot is the diverting user
            uri = entry.uri
            user = getattr(uri, "user", None)
            if user and user.split(";")[0] != pilot:
                return user.split(";")[0], getattr(uri, "host", None)
    diversion = headers.get("Diversion")
    if diversion:
        user, host = _user_of(diversion.split(",")[0])
        if user:
            return user.split(";")[0], host
    return None, None


def _styled(result: Response | defer.Deferred[Response], style: str) -> Response | defer.Deferred[Response]:
    """The 302's TLS Contact as the gateway can use it: `sips:`, or `sip:` with transport=tls
    ([callrouter.gateways] contact_scheme; by default the gateway's own Request-URI scheme)."""
    if style == "sips":
        return result
    if isinstance(result, defer.Deferred):
        return result.addCallback(_styled, style)
    contact = result.headers.get("Contact")
    if result.status == 302 and contact:
        result.headers.replace_first("Contact", secure_contact(contact, style))
    return result


class CallRouter:
    """The call router's SIP handler (`handler(request, peer)` for SipStreamFactory)."""

    def __init__(self, gateways: GatewayTable, hunt_groups: Iterable[HuntGroup], directory: Directory,
                 local: MailboxService | None, client: Any = None,
                 probe: ProbeSettings | None = None) -> None:
        self.gateways = gateways
        self.local = local
        self.client = client  # um.sip.uac (DeferredUac) for remote mailbox servers
        self.probe = probe or ProbeSettings()
        self.health: dict[str, Health] = {}
        self.state = RouterState(directory)
        self.set_directory(directory, hunt_groups)
        self._round_robin = itertools.count()
        self.counters = {"redirects": 0, "rejected": 0, "untrusted": 0}

    def set_directory(self, directory: Directory, hunt_groups: Iterable[HuntGroup] | None = None) -> None:
        groups: dict[str, list[HuntGroup]] = {}
        for group in (hunt_groups if hunt_groups is not None else
                      [g for gs in self.state.hunt_groups.values() for g in gs]):
            groups.setdefault(group.pilot, []).append(group)
        for pilot in groups:  # gateway-specific hunt groups first
            groups[pilot].sort(key=lambda g: g.gateway == "")
        self.state = RouterState(directory, groups)
        for name in directory.servers:
            self.health.setdefault(name, Health())

    # --- per request ---------------------------------------------------------------------
    def __call__(self, request: Request, peer: Peer) -> Response | None | defer.Deferred[Response]:
        method = request.method
        if method == "ACK":
            return None
        gateway = self.gateways.match(peer)
        if gateway is None:
            self.counters["rejected"] += 1
            self.counters["untrusted"] += 1
            log.info("call router: {method} from {host} refused: not a UM IP gateway", method=method,
                     host=peer.host)
            return make_response(request, 403, "Forbidden")  # generic: the log says why, the stranger not
        if gateway.status == "disabled":
            return make_response(request, 403, "Forbidden - UM IP gateway disabled", [("Server", SERVER)])
        if method not in ("INVITE", "OPTIONS", "CANCEL"):
            return refuse_method(request, ALLOW)  # RFC 3261 §8.2.1: method inspection first
        if method == "CANCEL":
            return make_response(request, 481, None, [("Server", SERVER)])
        require = request.headers.get("Require")
        if require:  # §8.2.2.3: we support no extension that Require may name
            unsupported = [t.strip() for t in require.split(",") if t.strip() not in SUPPORTED_EXTENSIONS]
            if unsupported:
                return make_response(request, 420, None, [("Unsupported", ", ".join(unsupported))])
        if method == "OPTIONS":
            return make_response(request, 200, None, [("Allow", ALLOW), ("Accept", "application/sdp"),
                                                      ("Server", SERVER)])
        return _styled(self.route(request, peer, gateway), contact_style(request.ruri, gateway.contact_scheme))

    def route(self, request: Request, peer: Peer, gateway: Gateway) -> Response | defer.Deferred[Response]:
        if gateway.status == "no-new-calls":
            return make_response(request, 403, "Forbidden - UM IP gateway takes no new calls")
        content_type = request.headers.get("Content-Type")
        if request.body and content_type is not None:
            media = content_type.split(";")[0].strip().lower()
            if media not in ("application/sdp", "multipart/mixed", "multipart/alternative"):
                return make_response(request, 415, None, [("Accept", "application/sdp")])
        ruri = request.ruri
        pilot = ruri.user.split(";")[0] if isinstance(ruri, SipUri | TelUri) and ruri.user else None
        state = self.state
        plan = self._dial_plan(state, pilot, gateway)
        if plan is None:
            return make_response(request, 404, "Not Found - no hunt group for this pilot number")
        if plan.secured and peer.transport != "tls":
            return make_response(request, 403, f"Forbidden - dial plan {plan.name} requires MTLS")
        user, host = diverting_user(request, pilot)
        if user is None:
            to_uri = request.to_addr.uri if request.to_addr is not None else None
            user, host = getattr(to_uri, "user", None), getattr(to_uri, "host", None)
            if user is not None:
                user = user.split(";")[0]
        if user is None or user == pilot or user in plan.access_numbers or user in plan.auto_attendant_numbers:
            if pilot in plan.access_numbers or pilot in plan.auto_attendant_numbers or (
                    user is not None and (user in plan.access_numbers or user in plan.auto_attendant_numbers)):
                return self._redirect(request, pilot, plan, self._healthy_servers(state))
            return make_response(request, 404, "Not Found - the pilot number is not a subscriber access number")
        mailbox = state.directory.find(plan, user, host)
        if mailbox is None:
            return make_response(request, 404, "Not Found - no mailbox for this extension")
        return self._redirect(request, pilot, plan, [mailbox.server])

    @staticmethod
    def _dial_plan(state: RouterState, pilot: str | None, gateway: Gateway) -> DialPlan | None:
        groups = state.hunt_groups.get(pilot or "")
        if not groups:
            return None
        for group in groups:
            if group.gateway in ("", gateway.address, gateway.name.lower()):
                return state.directory.dial_plans.get(group.dial_plan)
        return None

    def _healthy_servers(self, state: RouterState) -> list[str]:
        names = []
        if self.local is not None:
            names.append(LOCAL)
        names += list(state.directory.servers)
        if len(names) > 1:
            start = next(self._round_robin) % len(names)
            names = names[start:] + names[:start]
        return names

    def is_up(self, name: str) -> bool:
        if name == LOCAL:
            return self.local is not None and self.local.active.state == "active"
        health = self.health.get(name)
        return health is not None and health.up

    def _redirect(self, request: Request, pilot: str | None, plan: DialPlan,
                  candidates: list[str]) -> Response | defer.Deferred[Response]:
        live = [name for name in candidates if self.is_up(name)]
        if not live:
            return self._unavailable(request, "every mailbox server for this call is down")
        name = live[0]
        if name == LOCAL:
            contact = self.local.worker_contact(pilot, plan.secured)  # type: ignore[union-attr]
            if contact is None:
                return self._unavailable(request, "no worker for this dial plan's security")
            self.counters["redirects"] += 1
            return make_response(request, 302, None, [("Contact", f"<{contact}>")])
        server = self.state.directory.servers.get(name)
        if server is None or self.client is None:
            return self._unavailable(request, f"mailbox server {name} is not reachable from here")
        return self._ask_remote(request, pilot, plan, server, live[1:])

    def _unavailable(self, request: Request, why: str) -> Response:
        return make_response(request, 503, f"Service Unavailable - {why}",
                             [("Retry-After", str(self.probe.retry_after)), ("Server", SERVER)])

    def _ask_remote(self, request: Request, pilot: str | None, plan: DialPlan, server: MailboxServer,
                    rest: list[str]) -> defer.Deferred[Response]:
        scheme = "sips" if plan.secured else "sip"
        user = f"{pilot}@" if pilot else ""
        headers = request.headers
        items: list[tuple[str, str]] = []
        for name in ("From", "To", "Call-ID", "CSeq", "Contact", "History-Info", "Diversion"):
            items.extend((name, value) for value in headers.get_all(name))
        forwards = headers.get("Max-Forwards")
        items.insert(0, ("Max-Forwards", str(max(int(forwards) - 1, 0)) if forwards else "70"))
        query = Request("INVITE", f"{scheme}:{user}{bracket(server.address)}:{server.port}", Headers(items))
        asked = self.client.request(server.address, server.port, server.transport, query,
                                    timeout=self.probe.lookup_timeout)

        def answered(response: Response) -> Response | defer.Deferred[Response]:
            if response.status == 302 and response.headers.get("Contact"):
                self.counters["redirects"] += 1
                return make_response(request, 302, None, [("Contact", response.headers.get("Contact") or "")])
            log.info("call router: mailbox server {name} answered {status} {reason}", name=server.name,
                     status=response.status, reason=response.reason)
            if rest:
                return self._redirect(request, pilot, plan, rest)
            if response.status == 503:
                return self._unavailable(request, f"mailbox server {server.name} has no worker for this call")
            return make_response(request, 500, f"Server Internal Error - mailbox server {server.name} "
                                 f"answered {response.status}")

        def failed(failure: Any) -> Response | defer.Deferred[Response]:
            log.info("call router: mailbox server {name} did not answer: {why}", name=server.name,
                     why=failure.getErrorMessage())
            self._record(server.name, False, failure.getErrorMessage())
            if rest:
                return self._redirect(request, pilot, plan, rest)
            return self._unavailable(request, f"mailbox server {server.name} does not answer")

        asked.addCallbacks(answered, failed)
        return asked

    # --- probing -----------------------------------------------------------------------------
    def _record(self, name: str, ok: bool, status: str) -> None:
        health = self.health.setdefault(name, Health())
        health.last_status = status
        if ok:
            health.failures = 0
            health.successes += 1
            if not health.up and health.successes >= self.probe.success_threshold:
                health.up = True
                log.info("mailbox server {name} is up again", name=name)
        else:
            health.successes = 0
            health.failures += 1
            if health.up and health.failures >= self.probe.failure_threshold:
                health.up = False
                log.warn("mailbox server {name} is down ({status})", name=name, status=status)

    def probe_all(self, make_options: Callable[[MailboxServer], Request]) -> defer.Deferred[None]:
        """One OPTIONS round to every remote mailbox server; any answer below 500 counts as alive."""
        if self.client is None:
            return defer.succeed(None)
        rounds = []
        for server in list(self.state.directory.servers.values()):
            asked = self.client.request(server.address, server.port, server.transport, make_options(server),
                                        timeout=self.probe.timeout)
            asked.addCallbacks(
                lambda r, n=server.name: self._record(n, r.status < 500, f"{r.status} {r.reason}"),
                lambda f, n=server.name: self._record(n, False, f.getErrorMessage()))
            rounds.append(asked)
        return defer.DeferredList(rounds, consumeErrors=True).addCallback(lambda _: None)

    def status(self) -> dict[str, Any]:
        return {"counters": dict(self.counters),
                "servers": {name: {"up": h.up, "failures": h.failures, "last": h.last_status}
                            for name, h in self.health.items()}}
