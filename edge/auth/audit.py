"""The audit trail: one log line per issued token, and one per refusal.

Lines carry the identity, who asked (certificate name or API key id, and the
peer address), how (mras, https, cli), the granted lifetime and the expiry;
never the password and never an API key. They go to the `umedge.auth.audit`
log namespace, so an operator greps one stream (text or JSON, [log].format).
"""

from __future__ import annotations

import datetime as dt
from collections import Counter

from twisted.logger import Logger

log = Logger(namespace="umedge.auth.audit")
ISSUED: Counter[str] = Counter()  # tokens issued by path (mras, https, cli): for /metrics
REFUSED: Counter[str] = Counter()  # token requests refused by path: for /metrics and the status page


def _iso(unix: int) -> str:
    return dt.datetime.fromtimestamp(unix, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def issued(identity: str, requester: str, path: str, ttl: int, expiry: int) -> None:
    ISSUED[path] += 1
    log.info("token issued identity={identity} requester={requester} path={path} ttl={ttl} "
             "expiry={expiry_iso}", identity=identity, requester=requester, path=path, ttl=ttl,
             expiry=expiry, expiry_iso=_iso(expiry))


def refused(requester: str, path: str, reason: str) -> None:
    REFUSED[path] += 1
    log.info("token refused requester={requester} path={path} reason={reason}", requester=requester,
             path=path, reason=reason)
