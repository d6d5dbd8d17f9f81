"""What the operator's console needs from whatever runs the calls: list them, hang one up.

A small Protocol so the console (edge.node.admin) does not care where calls
run: in this process (the worker slots' WorkerCalls today) or in slot child
processes behind a supervisor. Both methods are coroutines, so an
implementation may ask another process and wait for its answer.

list_calls() returns one dict per active call, JSON-able, with at least:
    id        the call's id, unique on this node (the console prefixes "NODE/")
    slot      the worker slot number (1, 2) answering it
    caller    the caller's number or URI
    mailbox   the mailbox (extension) it is for, or None (subscriber access before login)
    media     "direct" or "relayed" (through the A/V Edge's TURN relay)
    codec     e.g. "PCMU", "PCMA", "telephone-event" excluded
    srtp      bool
    duration  seconds since the call was answered
    packets_lost, jitter_ms   RTP receive statistics so far (RFC 3550 estimates)
and may add more keys (state, direction, ...).

hang_up(call_id, reason) sends the BYE (with `Reason: SIP;cause=200;text="<reason>"`,
RFC 3326) for the call of that id and releases it as a normal hang-up does;
it returns False if no such call is active.

Worker slots in child processes: their supervisor implements both methods
(asking each live child over its control channel and merging the answers,
each with its "slot"; for hang_up, the child holding the call sends the BYE
with `reason_header(reason)` and ends the call with its media and slot
entry). The console uses the supervisor as is when it is the mailbox
service's `call_handler` and passes `isinstance(handler, CallControl)`
(edge.node.console.worker_call_control); anything else is read in process
(edge.node.admin_calls). For the status page and the alert rules, a
supervisor also puts "pid" (and "rss_bytes", "started") in each
WorkerSlot.status() and exports the counter umedge_worker_crashes_total{slot}.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class CallControl(Protocol):
    async def list_calls(self) -> list[dict[str, Any]]: ...

    async def hang_up(self, call_id: str, reason: str) -> bool: ...


def reason_header(reason: str) -> str:
    """An RFC 3326 Reason header value for `reason` (quotes and control characters removed, bounded)."""
    text = "".join(c for c in reason if c.isprintable() and c not in '"\\')[:120] or "ended by the operator"
    return f'SIP;cause=200;text="{text}"'


__all__ = ["CallControl", "reason_header"]
