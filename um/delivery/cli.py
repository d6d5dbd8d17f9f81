"""`umedge voicemail outbox [--json]` and `umedge voicemail outbox retry ID|--all`: the outbox on disk.

The CLI works on the files (um.delivery.outbox) whether or not the node runs:
a running delivery service sees a retried entry at its next look (≤ 0.25 s).
"""

from __future__ import annotations

import json
import time
from typing import Any

from um.delivery.outbox import Outbox
from um.worker.store import ID_PATTERN, VoicemailStore


def outbox_command(state_dir: str, words: list[str], *, as_json: bool, retry_all: bool) -> tuple[int, str]:
    """(exit code, text): `words` are the positionals after `outbox` (none, or `retry` [ID])."""
    outbox = Outbox(VoicemailStore(state_dir))
    if words and words[0] == "retry":
        target = words[1] if len(words) > 1 else None
        if (target is None) == (not retry_all):
            return 2, "voicemail outbox retry needs one message ID or --all"
        if target is not None and not ID_PATTERN.match(target):
            return 2, f"message id {target!r}: allowed YYYYMMDDTHHMMSSZ-xxxxxxxx"
        done = outbox.retry(target)
        if target is not None and not done:
            return 1, f"no queued or dead message {target}"
        return 0, json.dumps({"retried": done}) if as_json else f"{len(done)} message(s) due now: {' '.join(done)}"
    if words:
        return 2, f"voicemail outbox: unknown word {words[0]!r}; allowed: retry"
    snapshot = outbox.snapshot()
    if as_json:
        return 0, json.dumps(snapshot, indent=1)
    return 0, _table(snapshot)


def _table(snapshot: dict[str, Any]) -> str:
    now = time.time()
    lines = [f"queued: {snapshot['queue_size']} (oldest {snapshot['oldest_age']:.0f}s), dead: {snapshot['dead_count']}"
             + ("" if snapshot["enabled"] else "  ([delivery] mode is off)")]
    lines.append(f"{'state':<7} {'id':<26} {'mailbox':<8} {'tries':>5} {'next':>7}  last error")
    for e in snapshot["queued"]:
        due = max(0.0, e["next"] - now)
        lines.append(f"{'queued':<7} {e['id']:<26} {e['mailbox']:<8} {e['attempts']:>5} {due:>6.0f}s  "
                     f"{e['error'][:80]}")
    for e in snapshot["dead"]:
        lines.append(f"{'dead':<7} {e['id']:<26} {e['mailbox']:<8} {e['attempts']:>5} {'-':>7}  {e['error'][:80]}")
    return "\n".join(lines)


__all__ = ["outbox_command"]
