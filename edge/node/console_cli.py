"""`umedge sessions list|kill` and `umedge calls list|hangup`: the console's CLI, over the node's admin endpoint.

The commands speak HTTPS to /v1/admin/* on the web port (edge.node.admin_web),
trusting the pool CA, and present the node's own pool-CA certificate (run on
the node, as root or the service user) or, with --key-file or
$UMEDGE_ADMIN_KEY, a key of `[web] admin_keys` (anywhere).
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import json
import os
import re
import socket
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from certs.pki import CA_NAME, paths
from edge.node.config import load
from edge.node.schema import Config

EXIT_OK, EXIT_FAILURE, EXIT_CONFIG = 0, 1, 2
DEFAULT_REFUSAL = "15m"
_DURATION = re.compile(r"^(\d+)([smhd]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


class ConsoleError(Exception):
    def __init__(self, message: str, code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.code = code


def parse_until(text: str, now: float | None = None) -> float:
    """--until: a duration from now (90s, 30m, 2h, 1d; 0 lifts a refusal) or an ISO 8601 time (UTC if no zone)."""
    now = time.time() if now is None else now
    match = _DURATION.match(text.strip())
    if match:
        return now + int(match.group(1)) * _UNITS[match.group(2)]
    try:
        when = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ConsoleError(f"--until {text!r} not allowed; allowed: a duration (90s, 30m, 2h, 1d, 0) or an "
                           "ISO 8601 time (2026-12-01T08:00Z)", EXIT_CONFIG) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


def _base_url(config: Config, url: str | None) -> str:
    if url:
        return url.rstrip("/")
    host = config.node.listen_address
    host = "127.0.0.1" if host == "0.0.0.0" else "::1" if host == "::" else host
    return f"https://{'[' + host + ']' if ':' in host else host}:{config.web.http_port}"


def _context(config: Config, ca: str | None, key: str | None) -> ssl.SSLContext:
    certs = config.node.certs_dir
    cafile = ca or str(paths(certs, CA_NAME)[0])
    try:
        context = ssl.create_default_context(cafile=cafile)
    except OSError as error:
        raise ConsoleError(f"cannot read the pool CA {cafile}: {error.strerror} (give --ca)") from None
    context.check_hostname = False  # the pool CA is the trust anchor, the address is the operator's choice
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if key is None:
        crt, private = paths(certs, config.node.name)
        try:
            context.load_cert_chain(str(crt), str(private))
        except OSError as error:
            raise ConsoleError(f"no admin credentials: cannot read this node's certificate {crt} "
                               f"({error.strerror}); give --key-file or set UMEDGE_ADMIN_KEY") from None
    return context


def _key(args: argparse.Namespace) -> str | None:
    if args.key_file:
        try:
            return Path(args.key_file).read_text().strip()
        except OSError as error:
            raise ConsoleError(f"--key-file {args.key_file}: {error.strerror}", EXIT_CONFIG) from None
    return os.environ.get("UMEDGE_ADMIN_KEY") or None


def call(args: argparse.Namespace, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """One console request; the JSON answer, or ConsoleError naming the node's reason."""
    config = load(args.config)
    key = _key(args)
    url = _base_url(config, args.url) + path
    headers = {"X-Umedge-Operator": f"{getpass.getuser()}@{socket.gethostname()}"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, context=_context(config, args.ca, key), timeout=10) as answer:
            return dict(json.loads(answer.read()))
    except urllib.error.HTTPError as error:
        try:
            why = json.loads(error.read()).get("error", "")
        except ValueError:
            why = ""
        raise ConsoleError(f"{url}: {error.code} {why or error.reason}") from None
    except (urllib.error.URLError, OSError, ValueError) as error:
        raise ConsoleError(f"cannot reach the console at {url} ({getattr(error, 'reason', error)}): is "
                           "`umedge serve` running with the web role?") from None


def _missing(result: dict[str, Any]) -> None:
    if result.get("missing"):
        print(f"umedge: no answer from {', '.join(result['missing'])}", file=sys.stderr)
    if result.get("degraded"):
        print(f"umedge: {result['degraded']}", file=sys.stderr)


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000:
            return f"{n}{unit}"
        n //= 1000
    return f"{n}TB"


def cmd_sessions(args: argparse.Namespace) -> int:
    if args.action == "list":
        if args.id:
            raise ConsoleError("sessions list takes no ID (use --user)", EXIT_CONFIG)
        query = "?scope=node" if args.local else ""
        if args.user:
            query += ("&" if query else "?") + "user=" + urllib.parse.quote(args.user, safe="")
        result = call(args, "GET", "/v1/admin/sessions" + query)
        if args.json:
            print(json.dumps(result, indent=1))
            return EXIT_OK
        rows = sorted(result.get("sessions", []), key=lambda s: (s["node"], s["user"], s["id"]))
        print(f"{'ID':<22} {'USER':<28} {'CLIENT':<22} {'T':<4} {'RELAY':<22} {'AGE':>6} {'LEFT':>6} "
              f"{'P/C':>5} {'PKTS OUT/IN':>13} {'BYTES OUT/IN':>15} DIALECT")
        for s in rows:
            print(f"{s['id']:<22} {s['user'][:28]:<28} {s['client']:<22} {s['transport']:<4} "
                  f"{','.join(s['relay'])[:22]:<22} {s['age'] or 0:>5.0f}s {s['lifetime_left']:>5.0f}s "
                  f"{s['permissions']:>2}/{s['channels']:<2} "
                  f"{s['packets_to_peer']:>6}/{s['packets_to_client']:<6} "
                  f"{_size(s['bytes_to_peer']):>7}/{_size(s['bytes_to_client']):<7} {s['dialect']}")
        print(f"{len(rows)} allocation(s) on {', '.join(result.get('nodes', []))}")
        _missing(result)
        return EXIT_OK
    if bool(args.id) == bool(args.user):
        raise ConsoleError("sessions kill needs an ID or --user ID (not both)", EXIT_CONFIG)
    if args.id and args.until:
        raise ConsoleError("--until goes with --user", EXIT_CONFIG)
    body: dict[str, Any] = {"id": args.id} if args.id else {
        "user": args.user, "until": parse_until(args.until or DEFAULT_REFUSAL)}
    result = call(args, "POST", "/v1/admin/sessions/kill", body)
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        killed = result.get("killed", [])
        print(f"ended {len(killed)} allocation(s)" + (f": {', '.join(killed)}" if killed else ""))
        if args.user:
            until = body["until"]
            print(f"new allocations for {args.user} refused until "
                  f"{dt.datetime.fromtimestamp(until, dt.UTC):%Y-%m-%dT%H:%M:%SZ}" if until > time.time()
                  else f"no refusal for {args.user}")
    _missing(result)
    return EXIT_OK if (result.get("killed") or args.user) else EXIT_FAILURE


def cmd_calls(args: argparse.Namespace) -> int:
    if args.action == "list":
        result = call(args, "GET", "/v1/admin/calls" + ("?scope=node" if args.local else ""))
        if args.json:
            print(json.dumps(result, indent=1))
            return EXIT_OK
        rows = result.get("calls", [])
        print(f"{'ID':<40} {'SLOT':>4} {'CALLER':<24} {'MAILBOX':<8} {'MEDIA':<8} {'CODEC':<6} SRTP "
              f"{'DURATION':>8} {'LOST':>5} {'JITTER':>7}")
        for c in rows:
            print(f"{str(c.get('id'))[:40]:<40} {c.get('slot', '-')!s:>4} {str(c.get('caller'))[:24]:<24} "
                  f"{str(c.get('mailbox') or '-'):<8} {str(c.get('media')):<8} {str(c.get('codec')):<6} "
                  f"{'yes ' if c.get('srtp') else 'no  '} {float(c.get('duration') or 0):>7.1f}s "
                  f"{c.get('packets_lost', 0)!s:>5} {float(c.get('jitter_ms') or 0):>5.1f}ms")
        print(f"{len(rows)} call(s) on {', '.join(result.get('nodes', []))}")
        _missing(result)
        return EXIT_OK
    if not args.id:
        raise ConsoleError("calls hangup needs the call's ID (from `umedge calls list`)", EXIT_CONFIG)
    result = call(args, "POST", "/v1/admin/calls/hangup", {"id": args.id, "reason": args.reason})
    done = result.get("hung_up", [])
    print(json.dumps(result, indent=1) if args.json else
          (f"hung up {', '.join(done)} (BYE, reason {args.reason!r})" if done else f"no active call {args.id}"))
    return EXIT_OK if done else EXIT_FAILURE


def _guarded(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except ConsoleError as error:
            print(f"umedge: {error}", file=sys.stderr)
            return error.code

    return run


def register(sub: Any, with_config: Callable[[argparse.ArgumentParser], argparse.ArgumentParser]) -> None:
    """Add `sessions` and `calls` to the `umedge` parser."""

    def common(p: argparse.ArgumentParser) -> None:
        with_config(p)
        p.add_argument("--url", metavar="https://HOST:PORT", help="the node's web port (default: this node's)")
        p.add_argument("--key-file", metavar="FILE", help="a key of [web] admin_keys (default: $UMEDGE_ADMIN_KEY, "
                                                          "else this node's pool-CA certificate)")
        p.add_argument("--ca", metavar="FILE", help="the pool CA to trust (default: [node] certs_dir/ca.crt)")
        p.add_argument("--json", action="store_true")

    sessions = sub.add_parser("sessions", help="TURN allocations, pool-wide: list, end (kill)")
    common(sessions)
    sessions.add_argument("action", choices=("list", "kill"))
    sessions.add_argument("id", nargs="?", metavar="ID", help="kill: the allocation (NODE:PORT, from list)")
    sessions.add_argument("--user", metavar="ID", help="list: only this identity; kill: all of its allocations")
    sessions.add_argument("--until", metavar="T", help="kill --user: refuse its new allocations until T, a "
                                                       f"duration or ISO time (default {DEFAULT_REFUSAL}; 0: none)")
    sessions.add_argument("--local", action="store_true", help="list: this node only, not the pool")
    sessions.set_defaults(func=_guarded(cmd_sessions))

    calls = sub.add_parser("calls", help="calls on the UM worker slots: list, hang up (BYE)")
    common(calls)
    calls.add_argument("action", choices=("list", "hangup"))
    calls.add_argument("id", nargs="?", metavar="ID", help="hangup: the call (NODE/ID, from list)")
    calls.add_argument("--reason", default="ended by the operator", help="hangup: the BYE's Reason text")
    calls.add_argument("--local", action="store_true", help="list: this node only")
    calls.set_defaults(func=_guarded(cmd_calls))


__all__ = ["cmd_calls", "cmd_sessions", "parse_until", "register"]
