"""Keep this edge associated with its mediation server: REGISTER (or static), OPTIONS keepalive, failover.

Mode "register": REGISTER the AOR sip:<aor_user>@<domain> with the edge's
MRAS URI as Contact (+sip.instance, RFC 5626), answer digest challenges (MD5
or SHA-256), refresh before expiry, and de-register on a clean stop. Mode
"static": no REGISTER, OPTIONS only, as Lync associates an edge statically.
Every keepalive interval each known server gets an OPTIONS; when the active
one fails (connect error, timeout, 503) the edge moves to the next target and
registers there; when a better one answers again, it moves back. The state
of every server is kept for `umedge mediation status`.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger

from edge.mediation.discovery import Discovery
from edge.mediation.targets import Target
from um.sip.message import Request, Response
from um.sip.transaction import make_request
from um.sip.uac import Credentials, UserAgentClient

log = Logger(namespace="umedge.mediation")
REFRESH_FRACTION = 0.8  # refresh a registration when 80 % of its lifetime has passed


@dataclass
class ServerState:
    """What `umedge mediation status` shows for one mediation server."""

    address: str
    mode: str
    registration: str = "none"  # none, registered, failed, unregistered (static mode: none)
    expires_at: float | None = None
    last_keepalive: float | None = None
    keepalive_ok: bool | None = None
    failures: int = 0
    last_error: str | None = None
    active: bool = False


@dataclass
class RegistrationSettings:
    mode: str  # "register" or "static"
    aor: str  # sip:<aor_user>@<domain>
    registrar_domain: str
    contact: str  # the edge's MRAS URI
    instance: str  # +sip.instance value: "<urn:uuid:...>"
    expires: int
    keepalive_interval: float
    timeout: float
    username: str = ""
    password: str = field(default="", repr=False)


def instance_id(node_fqdn: str) -> str:
    """A stable RFC 5626 instance id for this node (the same across restarts)."""
    return f"<urn:uuid:{uuid.uuid5(uuid.NAMESPACE_DNS, node_fqdn)}>"


class MediationService(service.Service):
    def __init__(self, settings: RegistrationSettings, discovery: Discovery, client: UserAgentClient,
                 via_host: str, status_path: Path,
                 publish: Callable[[str, dict[str, object]], None] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.discovery = discovery
        self.client = client
        self.via_host = via_host
        self.status_path = status_path
        self._publish = publish
        self._clock = clock
        self.states: dict[str, ServerState] = {}
        self.active: Target | None = None
        self._registered_at: Target | None = None
        self._call_id = uuid.uuid4().hex
        self._cseq = 0
        self._task: asyncio.Task[None] | None = None
        self._refresh_due = 0.0

    # --- lifecycle ------------------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self._task = asyncio.get_event_loop().create_task(self._run())

    def stopService(self) -> defer.Deferred[None]:
        super().stopService()
        if self._task is not None:
            self._task.cancel()
            self._task = None

        async def farewell() -> None:
            if self._registered_at is not None:
                await self._register(self._registered_at, expires=0)
            self.client.close()

        return defer.Deferred.fromFuture(asyncio.ensure_future(
            asyncio.wait_for(farewell(), self.settings.timeout))).addErrback(lambda failure: None)

    async def _run(self) -> None:
        while True:
            try:
                await self.cycle()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - keep the association loop alive whatever happens
                log.failure("mediation cycle failed")
            await asyncio.sleep(self.settings.keepalive_interval)

    # --- one keepalive cycle -----------------------------------------------------------------

    async def cycle(self) -> None:
        """Probe every server, pick the best live one, (re-)register there if needed."""
        targets = await self.discovery.targets()
        if not targets:
            log.warn("no mediation server found ({why})", why=self.discovery.last_error or "none configured")
            return
        alive: dict[Target, bool] = {}
        for target in targets:
            alive[target] = await self._keepalive(target)
        best = next((t for t in targets if alive[t]), None)
        if best is None:
            if self.active is not None:
                log.warn("every mediation server failed its keepalive")
            self._set_active(None)
            self._save()
            return
        if best != self.active:
            if self.active is not None:
                log.info("mediation moves from {old} to {new}", old=self.active.label, new=best.label)
            self._set_active(best)
        if self.settings.mode == "register":
            await self._ensure_registered(best, alive)
        self._save()

    def _set_active(self, target: Target | None) -> None:
        self.active = target
        for label, state in self.states.items():
            state.active = target is not None and label == target.label

    def _state(self, target: Target) -> ServerState:
        state = self.states.get(target.label)
        if state is None:
            state = self.states[target.label] = ServerState(target.label, self.settings.mode)
        return state

    async def _keepalive(self, target: Target) -> bool:
        state = self._state(target)
        request = make_request("OPTIONS", self._server_uri(target), via_host=self.via_host,
                               transport=target.transport, from_uri=self.settings.aor,
                               to_uri=self._server_uri(target))
        response, error = await self._send(target, request)
        state.last_keepalive = self._clock()
        ok = response is not None and response.status < 500
        state.keepalive_ok = ok
        if not ok:
            state.failures += 1
            state.last_error = error or f"OPTIONS answered {response.status} {response.reason}"  # type: ignore[union-attr]
            if state.registration == "registered":
                state.registration = "failed"
        return ok

    async def _ensure_registered(self, best: Target, alive: dict[Target, bool]) -> None:
        previous = self._registered_at
        due = self._clock() >= self._refresh_due
        if previous == best and not due:
            return
        if await self._register(best, self.settings.expires):
            if previous is not None and previous != best and alive.get(previous):
                await self._register(previous, expires=0)  # back in priority order: leave the fallback
            return
        # Registration refused or failed: the next live target takes over at the next cycle.
        self._set_active(None)

    # --- REGISTER -------------------------------------------------------------------------------

    def _server_uri(self, target: Target) -> str:
        scheme = "sips" if target.transport == "tls" else "sip"
        host = f"[{target.host}]" if ":" in target.host else target.host
        return f"{scheme}:{host}:{target.port};transport={target.transport}"

    async def _register(self, target: Target, expires: int) -> bool:
        state = self._state(target)
        self._cseq += 1
        contact = f"<{self.settings.contact}>;+sip.instance=\"{self.settings.instance}\""
        request = make_request(
            "REGISTER", f"sip:{self.settings.registrar_domain}", via_host=self.via_host,
            transport=target.transport, from_uri=self.settings.aor, to_uri=self.settings.aor,
            call_id=self._call_id, cseq=self._cseq,
            extra=[("Contact", contact), ("Expires", str(expires)), ("Supported", "outbound, path"),
                   ("User-Agent", "umedge A/V edge")])
        credentials = Credentials(self.settings.username, self.settings.password) if self.settings.username else None
        response, error = await self._send(target, request, credentials)
        if response is not None and response.cseq_number is not None:
            self._cseq = max(self._cseq, response.cseq_number)  # the client's digest retry counted one up
        if response is not None and 200 <= response.status < 300:
            if expires == 0:
                state.registration, state.expires_at = "unregistered", None
                if self._registered_at == target:
                    self._registered_at = None
                log.info("de-registered from {server}", server=target.label)
                return True
            granted = _granted_expires(response, expires, self.settings.instance)
            state.registration, state.expires_at = "registered", self._clock() + granted
            state.last_error = None
            self._registered_at = target
            self._refresh_due = self._clock() + granted * REFRESH_FRACTION
            log.info("registered {aor} at {server} for {expires}s", aor=self.settings.aor,
                     server=target.label, expires=granted)
            return True
        state.failures += 1
        state.registration = "failed"
        state.last_error = error or f"REGISTER answered {response.status} {response.reason}"  # type: ignore[union-attr]
        log.warn("registration at {server} failed: {why}", server=target.label, why=state.last_error)
        return False

    async def _send(self, target: Target, request: Request,
                    credentials: Credentials | None = None) -> tuple[Response | None, str | None]:
        try:
            response = await asyncio.wait_for(self.client.request(
                target.host, target.port, target.transport, request, timeout=self.settings.timeout,
                credentials=credentials), 2 * self.settings.timeout + 1)
            return response, None
        except TimeoutError:
            return None, "timeout"
        except Exception as error:  # noqa: BLE001 - connect errors, TLS failures, SIP timeouts
            return None, str(error) or type(error).__name__

    # --- status ---------------------------------------------------------------------------------

    def snapshot(self) -> list[dict[str, object]]:
        return [asdict(state) for state in self.states.values()]

    def _save(self) -> None:
        entries = self.snapshot()
        tmp = self.status_path.with_name(f".{self.status_path.name}.tmp")
        tmp.write_text(json.dumps({"updated": self._clock(), "servers": entries}, indent=1))
        os.replace(tmp, self.status_path)
        if self._publish is not None:
            for entry in entries:
                self._publish(str(entry["address"]), entry)


def _granted_expires(response: Response, asked: int, instance: str = "") -> int:
    """The lifetime the registrar granted our contact: its expires param, else Expires, else ours."""
    contacts = [c for part in response.headers.get_all("Contact") for c in part.split(",")]
    ours = [c for c in contacts if instance and instance.strip("<>") in c] or contacts[:1]
    for contact in ours:
        match = re.search(r";\s*expires=(\d+)", contact)
        if match:
            return int(match.group(1))
    value = response.headers.get("Expires")
    return int(value) if value and value.isdigit() else asked
