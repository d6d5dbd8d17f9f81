#!/usr/bin/python3
"""A libnice ICE agent with two components (RTP and RTCP, no rtcp-mux) as a caller's media stack.

Run with the *system* Python (/usr/bin/python3, Debian `gir1.2-nice-0.1` and `python3-gi`); it imports
nothing from umedge. tests/worker/test_libnice_caller.py drives it over stdin/stdout, one JSON object a line:

    out {"ufrag", "pwd", "candidates": ["candidate:..." per component]}   once gathered
    in  {"ufrag", "pwd", "candidates": ["candidate:...", ...]}           the worker's answer
    out {"states", "received": {"1": n, "2": n}, "selected": {...}, "ok"} after --seconds

Once both components are ready it sends G.711 RTP (a loud tone) on component 1 and an RTCP receiver
report every 200 ms on component 2 (the RTP-in-RFC-3550 way: RTCP on its own component/port).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import struct
import sys
from pathlib import Path

import gi

gi.require_version("Nice", "0.1")
from gi.repository import GLib, Nice  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "msturn"))  # run as a script: its ctypes helper
import libnice_ctypes  # noqa: E402

STATE_NAMES = {int(Nice.ComponentState.CONNECTED): "connected", int(Nice.ComponentState.READY): "ready",
               int(Nice.ComponentState.FAILED): "failed"}


def ulaw(sample: int) -> int:
    """G.711 mu-law of a 16-bit sample (ITU-T G.711), so the tone is loud enough to be kept."""
    sign = 0x80 if sample < 0 else 0
    magnitude = min(abs(sample), 32635) + 0x84
    exponent = max(0, magnitude.bit_length() - 8)
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return ~(sign | (exponent << 4) | mantissa) & 0xFF


TONE = bytes(ulaw(int(12000 * math.sin(2 * math.pi * 440 * n / 8000))) for n in range(160))


def emit(obj: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--local", default="127.0.0.1")
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    context = GLib.MainContext.default()
    loop = GLib.MainLoop.new(context, False)
    agent = Nice.Agent.new(context, Nice.Compatibility.RFC5245)
    agent.set_property("controlling-mode", True)
    agent.set_property("upnp", False)
    agent.set_property("ice-tcp", False)
    local = Nice.Address.new()
    local.set_from_string(args.local)
    agent.add_local_address(local)
    stream = agent.add_stream(2)
    states: dict[int, str] = {}
    received = {1: 0, 2: 0}
    selected: dict[int, list[str]] = {}
    gathered = {"done": False, "answered": False, "started": 0.0}

    agent.connect("candidate-gathering-done", lambda *_: gathered.update(done=True))
    agent.connect("component-state-changed",
                  lambda _a, _s, component, state: states.__setitem__(int(component),
                                                                      STATE_NAMES.get(int(state), str(state))))
    agent.connect("new-selected-pair-full",
                  lambda _a, _s, component, local_c, remote_c: selected.__setitem__(
                      int(component), [f"{local_c.addr.dup_string()}:{local_c.addr.get_port()}",
                                       f"{remote_c.addr.dup_string()}:{remote_c.addr.get_port()}"]))
    callbacks = []

    def got(component: int, _data: bytes) -> None:
        received[component] += 1

    try:
        callbacks += [libnice_ctypes.attach_recv(agent, stream, component, got) for component in (1, 2)]
    except RuntimeError as error:
        emit({"error": str(error)})
        return 1
    agent.gather_candidates(stream)
    ssrc, seq, ts = int.from_bytes(os.urandom(4), "big"), 1000, 16000
    counter = {"rtp": 0, "rtcp": 0}

    def answer_in(source: object, condition: object) -> bool:
        line = sys.stdin.readline()
        if not line:
            return False
        answer = json.loads(line)
        agent.set_remote_credentials(stream, answer["ufrag"], answer["pwd"])
        for component in (1, 2):
            remote = []
            for text in answer["candidates"]:
                candidate = agent.parse_remote_candidate_sdp(stream, "a=" + text)
                if candidate is not None and int(candidate.component_id) == component:
                    remote.append(candidate)
            agent.set_remote_candidates(stream, component, remote)
        gathered["answered"] = True
        return False

    GLib.io_add_watch(sys.stdin.fileno(), GLib.IO_IN, answer_in)

    def tick() -> bool:
        nonlocal seq, ts
        if gathered["done"] and not gathered.get("sent"):
            gathered["sent"] = True
            ufrag, pwd = agent.get_local_credentials(stream)[1:]
            lines = [agent.generate_local_candidate_sdp(c).removeprefix("a=")
                     for component in (1, 2) for c in agent.get_local_candidates(stream, component)]
            emit({"ufrag": ufrag, "pwd": pwd, "candidates": lines})
        if states.get(1) in ("connected", "ready") and states.get(2) in ("connected", "ready"):
            rtp = struct.pack("!BBHII", 0x80, 0, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc) + TONE
            libnice_ctypes.send(agent, stream, 1, rtp)
            seq, ts = seq + 1, ts + 160
            counter["rtp"] += 1
            if counter["rtp"] % 10 == 0:  # an RTCP RR (no report blocks) on its own component
                rr = struct.pack("!BBHI", 0x80, 201, 1, ssrc)
                libnice_ctypes.send(agent, stream, 2, rr)
                counter["rtcp"] += 1
        return True

    def finish() -> bool:
        emit({"states": {str(k): v for k, v in states.items()}, "received": {str(k): v for k, v in received.items()},
              "selected": {str(k): v for k, v in selected.items()}, "sent": counter,
              "ok": counter["rtp"] > 0 and received[1] > 0 and received[2] > 0})
        loop.quit()
        return False

    GLib.timeout_add(20, tick)
    GLib.timeout_add(int(args.seconds * 1000), finish)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
