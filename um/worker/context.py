"""What every call of the worker shares (`WorkerContext`): store, PINs, prompts, media tokens,
RTP ports, the media clock, the directory, counters and the calls in progress."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from twisted.logger import Logger

from um.directory import CallDirectory, LiveDirectory
from um.worker import sdp
from um.worker.media import MediaClock
from um.worker.pins import PinPolicy, PinStore, plan_policy
from um.worker.prompts import Prompts
from um.worker.settings import WorkerSettings
from um.worker.store import VoicemailStore
from um.worker.tokens import MediaToken, TokenSource
from um.worker.transport import DirectTransport, IceTransport, MediaTransport, PortRange, RelayTransport

if TYPE_CHECKING:
    from um.worker.call import Call

log = Logger(namespace="umedge.worker")


class WorkerContext:
    """What every call of the worker shares: store, PINs, prompts, tokens, ports, the media clock."""

    def __init__(self, settings: WorkerSettings, directory: LiveDirectory | CallDirectory) -> None:
        self.settings = settings
        self.store = VoicemailStore(settings.state_dir)
        if settings.slot is not None:
            # A worker process keeps its recordings in progress apart: its start-up recovery finishes what its
            # dead predecessor on this slot left and never touches what the other slot's process is writing.
            self.store.tmp_dir = self.store.root / f".tmp-slot{settings.slot}"
        self.pins = PinStore(settings.state_dir, settings.pin_policy, self.pin_policy)
        self.prompts = Prompts(settings.prompt_dir or None, settings.greeting_dir or None,
                               Path(settings.state_dir) / "prompts", settings.spoken_prompts)
        self.ports = PortRange(settings.rtp_port_min, settings.rtp_port_max)
        self.clock = MediaClock()
        self.directory = directory
        self.tokens = TokenSource(settings.certs_dir, settings.node_name, settings.edge_mras, settings.edge_https,
                                  server_hostname=settings.edge_server_name)
        self.counters = {"calls": 0, "answered": 0, "rejected": 0, "messages": 0, "messages_discarded": 0,
                         "subscriber_logins": 0, "relay_calls": 0, "ice_calls": 0, "direct_calls": 0,
                         "srtp_calls": 0, "outbound_calls": 0}
        self.calls: dict[tuple[str, str, str | None], Call] = {}
        self.finished: list[dict[str, Any]] = []  # media stats of the last calls (bounded)
        self.on_change: Callable[[], None] = lambda: None  # a call ended (a worker process reports it soon)
        # In the node's main process: what the worker processes last reported (um.worker.supervisor), merged
        # into status() and all_counters() so the web API and /metrics see the node's calls.
        self.remote: Callable[[], dict[str, Any]] | None = None

    def pin_policy(self, mailbox: str) -> PinPolicy:
        """The PIN policy of the mailbox's dial plan ([worker]'s where the plan sets none)."""
        return plan_policy(self.settings.pin_policy, self.directory.plan_of(mailbox))

    def start(self) -> None:
        handled = self.store.recover(folders=self.settings.slot is None)
        if handled:  # what a crash left: finished as messages, or removed when unreadable
            log.info("voicemail store: {n} file(s) a crash left: {files}", n=len(handled),
                     files="; ".join(handled[:5]))
        self.clock.start()
        if self.settings.spoken_prompts:
            from um.worker import speech

            if self.settings.slot is None:  # the main process renders, once; worker processes use the files
                speech.render_in_background(self.prompts, self.settings.languages)
            elif not speech.available():
                self.prompts.spoken = False  # as the main process decides: tone prompts without espeak-ng

    async def media_token(self) -> MediaToken:
        return await self.tokens.get(self.settings.media_identity)

    async def open_transport(self, remote_ice: sdp.IceParams | None, controlling: bool = False,
                             rtcp_mux: bool = False) -> MediaTransport:
        """The call's media transport; RTP on an even port and RTCP on the next one unless `rtcp_mux`."""
        s = self.settings
        if not s.media_via_edge:
            self.counters["direct_calls"] += 1
            return await DirectTransport(self.ports, s.host, s.advertise, rtcp_mux).open()
        token = await self.media_token()
        if remote_ice is not None:
            self.counters["ice_calls"] += 1
            return await IceTransport(self.ports, s.host, token.relay, token.username, token.password,
                                      controlling, rtcp_mux).open()
        self.counters["relay_calls"] += 1
        return await RelayTransport(self.ports, s.host, token.relay, token.username, token.password,
                                    rtcp_mux).open()

    def mailbox_access(self) -> Any:
        """What the phone menu (um.worker.menus) may read and change of the mailboxes."""
        from um.worker.menus import Mailbox

        store, pins = self.store, self.pins
        return Mailbox(messages=store.messages, audio=lambda m, codec: store.audio(m).as_g711(codec),
                       mark_read=store.mark_read, delete=store.delete, pin_status=pins.status,
                       set_pin=pins.set_pin, known=self.directory.known, policy_of=self.pin_policy)

    def remember(self, stats: dict[str, Any]) -> None:
        self.finished.append(stats)
        del self.finished[:-1000]
        self.on_change()

    def all_counters(self) -> dict[str, int]:
        """This process's counters plus the worker processes' (those that exited included)."""
        counters = dict(self.counters)
        remote = self.remote() if self.remote is not None else {}
        for name, value in remote.get("counters", {}).items():
            counters[name] = counters.get(name, 0) + int(value)
        return counters

    def status(self) -> dict[str, Any]:
        tokens = dict(self.tokens.counters)
        status: dict[str, Any] = {"counters": dict(self.counters), "active_calls": len(self.calls),
                                  "tokens": tokens, "late_ticks": self.clock.late_ticks,
                                  "calls": [call.describe() for call in list(self.calls.values())[:200]],
                                  "recent": self.finished[-20:]}
        if self.remote is not None:
            remote = self.remote()
            for name, value in remote.get("tokens", {}).items():
                tokens[name] = tokens.get(name, 0) + int(value)
            status.update(counters=self.all_counters(), active_calls=len(self.calls) + remote.get("active_calls", 0),
                          late_ticks=self.clock.late_ticks + remote.get("late_ticks", 0),
                          calls=(status["calls"] + remote.get("calls", []))[:200],
                          recent=(self.finished + remote.get("recent", []))[-20:])
        return status

    async def stop(self, timeout: float = 2.5) -> None:
        """Stop every call: recordings in progress are stored (whole), media closed."""
        calls = list(self.calls.values())
        await asyncio.gather(*(call.end("shutdown", send_bye=True) for call in calls), return_exceptions=True)
        scripts = [c._script for c in calls if c._script is not None and not c._script.done()]
        if scripts:
            await asyncio.wait(scripts, timeout=timeout)
        await asyncio.gather(*(call.end("shutdown") for call in calls), return_exceptions=True)
        self.clock.stop()
        await self.tokens.close()


__all__ = ["WorkerContext"]
