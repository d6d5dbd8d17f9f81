#!/usr/bin/python3
"""libnice against a TURN server: two agents relay data to each other through it.

Run with the *system* Python (/usr/bin/python3, Debian `gir1.2-nice-0.1` and
`python3-gi`); it imports nothing from umedge. tests/msturn/test_libnice.py
drives it.

Two Nice.Agent objects share one GLib main loop (controlling and controlled),
each with a TURN-UDP relay on the server. Once both have gathered, each is
given only the other's *relay* candidates (and ICE credentials), so the
connectivity checks and the data go relay to relay through the server. The
controlling agent then sends PAYLOAD-a, the controlled one PAYLOAD-b; each
receives through a callback attached with nice_agent_attach_recv (via ctypes).

Usage: libnice_agent.py --server 127.0.0.1 --port N --username U --password P
       [--compat oc2007r2|rfc5245] [--timeout 15]

U and P go to nice_agent_set_relay_info unchanged: in OC2007/OC2007R2 mode
libnice base64-decodes both before use (socket/udp-turn.c), so the caller
passes them base64 (test_libnice.py: the token username base64-encoded, the
token password as it is, since it already is base64).

Prints one JSON object on stdout: {"compat", "gathered", "relays": {agent:
[ip, port] or null}, "state", "selected": {agent: [local type,
remote type]}, "received": {agent: text}, "ok", "error"}.
"""

from __future__ import annotations

import argparse
import json
import sys

import gi
import libnice_ctypes  # next to this script (sys.path[0])

gi.require_version("Nice", "0.1")
from gi.repository import GLib, Nice  # noqa: E402  (PyGObject: the version is chosen before the import)

COMPAT = {
    "oc2007r2": Nice.Compatibility.OC2007R2,
    "rfc5245": Nice.Compatibility.RFC5245,
}
PAYLOAD = "umedge-libnice"
TYPE_NAMES = {
    int(Nice.CandidateType.HOST): "host",
    int(Nice.CandidateType.SERVER_REFLEXIVE): "srflx",
    int(Nice.CandidateType.PEER_REFLEXIVE): "prflx",
    int(Nice.CandidateType.RELAYED): "relay",
}
STATE_NAMES = {
    int(Nice.ComponentState.DISCONNECTED): "disconnected",
    int(Nice.ComponentState.GATHERING): "gathering",
    int(Nice.ComponentState.CONNECTING): "connecting",
    int(Nice.ComponentState.CONNECTED): "connected",
    int(Nice.ComponentState.READY): "ready",
    int(Nice.ComponentState.FAILED): "failed",
}


class Side:
    def __init__(self, name: str, context: GLib.MainContext, compat: Nice.Compatibility,
                 controlling: bool, args: argparse.Namespace) -> None:
        self.name = name
        self.agent = Nice.Agent.new(context, compat)
        self.agent.set_property("controlling-mode", controlling)
        self.agent.set_property("upnp", False)
        # Host candidates on loopback only, where the server listens (libnice skips
        # loopback when it enumerates interfaces itself).
        local = Nice.Address.new()
        local.set_from_string(args.local)
        self.agent.add_local_address(local)
        self.agent.set_property("ice-tcp", False)
        self.agent.set_property("force-relay", True)  # only relay candidates: data must cross the server
        self.stream = self.agent.add_stream(1)
        ok = self.agent.set_relay_info(self.stream, 1, args.server, args.port,
                                       args.username, args.password, Nice.RelayType.UDP)
        if not ok:
            raise RuntimeError("set_relay_info refused")
        self.gathered = False
        self.state = "disconnected"
        self.received = ""
        self.agent.connect("candidate-gathering-done", self._gathered)
        self.agent.connect("component-state-changed", self._state)
        self.selected: list[str] | None = None
        self.agent.connect("new-selected-pair-full", self._selected)

    def _gathered(self, _agent: Nice.Agent, _stream: int) -> None:
        self.gathered = True

    def _state(self, _agent: Nice.Agent, _stream: int, _component: int, state: int) -> None:
        self.state = STATE_NAMES.get(int(state), str(state))

    def _selected(self, _agent: Nice.Agent, _stream: int, _component: int,
                  local: Nice.Candidate, remote: Nice.Candidate) -> None:
        self.selected = [TYPE_NAMES.get(int(c.type), str(c.type)) for c in (local, remote)]

    def relays(self) -> list[Nice.Candidate]:
        """Our relay candidates on the server under test."""
        found = []
        for candidate in self.agent.get_local_candidates(self.stream, 1):
            if candidate.type == Nice.CandidateType.RELAYED:
                found.append(candidate)
        return found

    def relay_address(self) -> list[object] | None:
        for candidate in self.relays():
            return [candidate.addr.dup_string(), candidate.addr.get_port()]
        return None

    def credentials(self) -> tuple[str, str]:
        _, ufrag, pwd = self.agent.get_local_credentials(self.stream)
        return ufrag, pwd

    def attach_recv(self) -> None:
        """The payload arrives through nice_agent_attach_recv (libnice_ctypes: GI cannot bind it)."""

        def received(_component: int, data: bytes) -> None:
            self.received += data.decode("utf-8", "replace")

        self._callback = libnice_ctypes.attach_recv(self.agent, self.stream, 1, received)  # kept with the agent


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--username", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--compat", choices=sorted(COMPAT), default="oc2007r2")
    parser.add_argument("--timeout", type=float, default=15)
    parser.add_argument("--local", default="127.0.0.1", help="the agents' host address")
    args = parser.parse_args()

    context = GLib.MainContext.default()
    loop = GLib.MainLoop.new(context, False)
    compat = COMPAT[args.compat]
    a = Side("a", context, compat, True, args)
    b = Side("b", context, compat, False, args)
    report: dict[str, object] = {"compat": args.compat, "ok": False, "error": None}
    phase = {"connected": False}

    def finish(error: str | None = None) -> None:
        report["error"] = error
        loop.quit()

    def tick() -> bool:
        if not phase["connected"]:
            if not (a.gathered and b.gathered):
                return True
            for me, other in ((a, b), (b, a)):
                relays = other.relays()
                if not relays:
                    finish(f"agent {other.name} got no relay candidate")
                    return False
                ufrag, pwd = other.credentials()
                me.agent.set_remote_credentials(me.stream, ufrag, pwd)
                me.agent.set_remote_candidates(me.stream, 1, relays)
            phase["connected"] = True
            return True
        for side in (a, b):
            if side.state == "failed":
                finish(f"agent {side.name}: ICE failed")
                return False
            if side.state in ("connected", "ready"):
                # Send repeatedly until the other side has it (the first may precede its checks).
                side.agent.send(side.stream, 1, len(PAYLOAD) + 2, f"{PAYLOAD}-{side.name}")
        if f"{PAYLOAD}-b" in a.received and f"{PAYLOAD}-a" in b.received:
            report["ok"] = True
            finish()
            return False
        return True

    for side in (a, b):
        side.attach_recv()
        side.agent.gather_candidates(side.stream)
    GLib.timeout_add(50, tick)
    GLib.timeout_add(int(args.timeout * 1000), lambda: finish("timeout") or False)
    loop.run()

    report.update(
        gathered={s.name: s.gathered for s in (a, b)},
        relays={s.name: s.relay_address() for s in (a, b)},
        state={s.name: s.state for s in (a, b)},
        selected={s.name: s.selected for s in (a, b)},
        received={s.name: s.received[:200] for s in (a, b)},
    )
    json.dump(report, sys.stdout)
    sys.stdout.write("\n")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
