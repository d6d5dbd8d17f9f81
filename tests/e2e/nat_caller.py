"""The lab's caller: run inside the caller namespace, behind its NAT, it calls a mailbox.

    python -m tests.e2e.nat_caller SIP_HOST TURN_HOST TURN_PORT SECRET MAILBOX SECONDS

It does ICE with a relay candidate on the edge (TURN), sends its INVITE to the
published call router (SIP_HOST:5060), follows the 302 to the worker port on
the same published address, sends SECONDS of G.711 and hangs up. It prints
one JSON line: the INVITE's final status, the payloads it sent (hex), and how
many packets came back.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import time

from edge.tokens import mint
from tests.worker import caller as caller_module
from tests.worker.caller import Caller, SipConnection, sdp_offer, sine_payloads


class LabCaller(Caller):
    """The test caller, but talking SIP to the firewall's published address instead of loopback."""

    sip_host = "127.0.0.1"

    async def _connect(self, port: int, ssl: object = None) -> None:
        loop = asyncio.get_running_loop()
        transport, self.sip = await loop.create_connection(SipConnection, self.sip_host, port)
        self.secure = False
        self.local = transport.get_extra_info("sockname")[:2]
        self._reader = asyncio.ensure_future(self._requests())


async def main(sip_host: str, turn_host: str, turn_port: int, secret: str, mailbox: str, seconds: float) -> dict:
    LabCaller.sip_host = sip_host
    caller_module.Caller = LabCaller  # redirect() builds its own Caller for the INVITE to the router
    caller = LabCaller()
    token = mint(secret, "sip:caller@example.test", 600, time.time())
    ice = await caller.open_ice((turn_host, turn_port), token.username, token.password)
    default = ice.get_default_candidate(1)
    if default is not None:
        offer = sdp_offer(default.host, default.port, ice=ice)
    else:  # no relay (the edge is down): offer plain RTP on our own, private, address
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.connect((sip_host, 9))
        offer = sdp_offer(probe.getsockname()[0], 40000)
        probe.close()
    result: dict = {"candidate": default.type if default else None, "sent": "", "received": 0}
    try:
        _, port = await caller.redirect(5060, "5000", mailbox)
        answer = await caller.call(port, "5000", mailbox, offer, timeout=20)
        result["status"], result["reason"] = answer.status, answer.reason
        if answer.status == 200 and default is not None:
            await caller.connect_ice(answer.body.decode())
            await caller.send_audio(sine_payloads(seconds, seed=11))
            await asyncio.sleep(0.3)
            result["bye"] = (await caller.bye()).status
            result["sent"] = b"".join(caller.sent_payloads).hex()
            result["received"] = len(caller.received)
    except (TimeoutError, AssertionError, OSError) as error:
        result["status"], result["reason"] = 0, f"{type(error).__name__}: {error}"
    finally:
        await caller.close()
    return result


if __name__ == "__main__":
    sip_host, turn_host, turn_port, secret, mailbox, seconds = sys.argv[1:7]
    print(json.dumps(asyncio.run(main(sip_host, turn_host, int(turn_port), secret, mailbox, float(seconds)))))
