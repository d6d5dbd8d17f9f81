"""The `umedge` command: serve, check-config, ports, firewall, certs, token.

Exit codes: 0 success, 1 a runtime failure (port in use, PKI problem),
2 invalid configuration or arguments.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from certs import pki
from edge.node import firewall
from edge.node.config import ConfigError, load, with_roles
from edge.node.listeners import format_table, listeners
from edge.node.schema import LOG_FORMATS, Config
from um.config import ROLES

EXIT_OK, EXIT_FAILURE, EXIT_CONFIG = 0, 1, 2


def _fail(message: str, code: int = EXIT_FAILURE) -> int:
    print(f"umedge: {message}", file=sys.stderr)
    return code


def _load(args: argparse.Namespace) -> Config:
    return load(args.config)


def parse_roles(text: str) -> tuple[str, ...]:
    """--roles: "all" or a comma list of role names."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    if names == ["all"]:
        return ROLES
    bad = [n for n in names if n not in ROLES]
    if bad or not names:
        raise argparse.ArgumentTypeError(
            f"{','.join(bad) or repr(text)} not allowed; allowed: all, or a comma list of {','.join(ROLES)}")
    return tuple(r for r in ROLES if r in names)


def cmd_check_config(args: argparse.Namespace) -> int:
    config = _load(args)
    rows = listeners(config)
    print(f"{config.source}: ok: node {config.node.name} ({config.node.fqdn}), roles "
          f"{','.join(config.node.roles)}, {len(rows)} listeners")
    from um.delivery.setup import warnings
    from um.directory import CallDirectory, load_directory

    for line in warnings(config, CallDirectory(load_directory(config.callrouter))):
        print(f"{config.source}: warning: {line}")
    return EXIT_OK


def cmd_ports(args: argparse.Namespace) -> int:
    rows = listeners(_load(args))
    if args.json:
        print(json.dumps([r.as_dict() for r in rows], indent=1))
    else:
        print(format_table(rows))
    return EXIT_OK


def cmd_firewall(args: argparse.Namespace) -> int:
    config = _load(args)
    sys.stdout.write(firewall.render(config, args.format))
    return EXIT_OK


def cmd_certs(args: argparse.Namespace) -> int:
    from edge.node.identity import ensure_certificates, node_sans

    config = _load(args)
    certs_dir = config.node.certs_dir
    try:
        if args.action == "init":
            existed = pki.ca_exists(certs_dir)
            created = ensure_certificates(config)
            if existed:
                print(f"pool CA exists: {pki.paths(certs_dir, pki.CA_NAME)[0]} (kept)")
            for path in created:
                print(f"created {path}")
            return EXIT_OK
        if args.action == "issue":
            if not args.name:
                return _fail("certs issue needs NAME", EXIT_CONFIG)
            sans = list(args.san or [])
            if args.name == config.node.name:
                sans = node_sans(config) + sans
            issued = pki.issue(certs_dir, args.name, sans)
            print(f"issued {issued} (key {pki.paths(certs_dir, args.name)[1]}, mode 0600)")
            return EXIT_OK
        return _show_certs(certs_dir)
    except pki.PkiError as error:
        return _fail(str(error))


def _show_certs(certs_dir: str) -> int:
    found = pki.inventory(certs_dir)
    if not found:
        print(f"{certs_dir}: no certificates (run `umedge certs init`)")
        return EXIT_OK
    for info in found:
        kind = "CA" if info.is_ca else "node"
        print(f"{info.name}.crt  {kind}  subject={info.subject}  sans={','.join(info.sans) or '-'}  "
              f"expires={info.not_after:%Y-%m-%d} ({info.days_left()} days)")
    for info in found:
        if info.expiring_soon:
            print(f"WARNING: {info.name}.crt expires in {info.days_left()} days "
                  f"(within {pki.EXPIRY_WARNING_DAYS}); re-issue it with `umedge certs issue {info.name}`")
    return EXIT_OK


def cmd_token(args: argparse.Namespace) -> int:
    """`token issue`: a media token minted locally from the config's secret, as the HTTPS API answers;
    with --web a UM web services token (a JWT for one mailbox, um.webtokens)."""
    import getpass
    import socket

    from edge.auth.issuer import IdentityError, TokenIssuer
    from edge.auth.relays import turn_uris
    from edge.node import logsetup

    config = _load(args)
    if args.ttl is not None and args.ttl <= 0:
        return _fail(f"--ttl {args.ttl} not allowed; allowed: a positive number of seconds", EXIT_CONFIG)
    if args.web:
        return _web_token(args, config)
    if args.mailbox is not None or args.scope is not None:
        return _fail("--mailbox and --scope go with --web", EXIT_CONFIG)
    if args.identity is None:
        return _fail("--identity is needed (or --web for a UM web services token)", EXIT_CONFIG)
    logsetup.start(config.log.format, config.log.level)  # the audit line goes to stderr
    try:
        issued = TokenIssuer.from_config(config).issue(
            args.identity, args.ttl, f"cli:{getpass.getuser()}@{socket.gethostname()}", "cli")
    except IdentityError as error:
        return _fail(f"--identity {args.identity!r}: {error}", EXIT_CONFIG)
    token = issued.token
    print(json.dumps({"username": token.username, "password": token.password, "ttl": issued.ttl,
                      "uris": turn_uris(config)}, indent=1))
    return EXIT_OK


def _web_token(args: argparse.Namespace, config: Config) -> int:
    """`token issue --web`: a JWT for the UM web services, signed with <state_dir>/web_token_secret."""
    import getpass
    import socket

    from um import webtokens

    if args.identity is not None:
        return _fail("--identity is for media tokens; a web token takes --mailbox and --scope", EXIT_CONFIG)
    if args.scope is None:
        return _fail(f"--scope is needed: a comma list of {','.join(webtokens.SCOPES)}", EXIT_CONFIG)
    ttl = args.ttl if args.ttl is not None else webtokens.DEFAULT_TTL
    try:
        token, claims = webtokens.issue(config.node.state_dir, args.mailbox, args.scope, ttl)
    except webtokens.WebTokenError as error:
        return _fail(str(error), EXIT_CONFIG)
    except OSError as error:
        return _fail(f"web token secret in {config.node.state_dir}: {error.strerror}")
    print(f"umedge: web token {claims['jti']} for {claims['sub']} ({claims['scope']}) issued by "
          f"cli:{getpass.getuser()}@{socket.gethostname()}", file=sys.stderr)
    print(json.dumps({"token": token, "mailbox": args.mailbox, "scope": claims["scope"],
                      "expires": claims["exp"], "ttl": ttl}, indent=1))
    return EXIT_OK


def cmd_voicemail(args: argparse.Namespace) -> int:
    """`voicemail list|export|pin-reset`: the voicemail store under [node] state_dir (um.worker.store)."""
    from pathlib import Path

    from um.directory import LiveDirectory
    from um.worker.pins import PinPolicy, PinPolicyError, PinStore, plan_policy
    from um.worker.store import StoreError, VoicemailStore

    config = _load(args)
    if args.action == "outbox":  # the delivery outbox (um.delivery.cli)
        from um.delivery.cli import outbox_command

        words = [w for w in (args.id, args.file) if w]
        code, text = outbox_command(config.node.state_dir, words, as_json=args.json, retry_all=args.all)
        print(text, file=sys.stdout if code == 0 else sys.stderr)
        return code
    store = VoicemailStore(config.node.state_dir)
    try:
        if args.action == "list":
            messages = store.messages(args.mailbox)
            if args.json:
                print(json.dumps([m.as_dict() for m in messages], indent=1))
                return EXIT_OK
            print(f"{'id':<26} {'mailbox':<8} {'caller':<32} {'time (UTC)':<25} {'duration':>8} codec  new  urgent")
            for m in messages:
                print(f"{m.id:<26} {m.mailbox:<8} {(m.caller_name or m.caller)[:32]:<32} {m.time:<25} "
                      f"{m.duration:>7.2f}s {m.codec:<6} {'no ' if m.read else 'yes'}  {'yes' if m.urgent else 'no'}")
            return EXIT_OK
        if args.action == "export":
            if not args.id or not args.file:
                return _fail("voicemail export needs ID and FILE.wav", EXIT_CONFIG)
            message = store.export(args.id, Path(args.file), pcm16=args.pcm)
            print(f"exported {message.id} ({message.duration:.2f}s {'16-bit PCM' if args.pcm else message.codec}) "
                  f"to {args.file}")
            return EXIT_OK
        if not args.id:
            return _fail("voicemail pin-reset needs the mailbox extension", EXIT_CONFIG)
        w = config.worker
        base = PinPolicy(min_length=w.pin_min_length, max_failures=w.pin_max_failures)
        directory = LiveDirectory(lambda: config.callrouter)
        pins = PinStore(config.node.state_dir, base, lambda mailbox: plan_policy(base, directory.plan_of(mailbox)))
        pin = pins.reset(args.id, args.pin)
        print(json.dumps({"mailbox": args.id, "locked": False, **({} if args.pin else {"pin": pin})}))
        return EXIT_OK
    except (StoreError, PinPolicyError) as error:
        return _fail(str(error), EXIT_CONFIG)
    except OSError as error:
        return _fail(str(error))


def cmd_prompts(args: argparse.Namespace) -> int:
    """`prompts render [--lang de] [--force]`: espeak-ng renders the prompt catalogue (um.worker.speech)."""
    from um.worker import speech

    config = _load(args)
    languages = (args.lang,) if args.lang else tuple(sorted({p.language for p in config.callrouter.dial_plans}
                                                            | {"en"}))
    try:
        for line in speech.render_command(config.node.state_dir, languages, args.force):
            print(line)
    except (speech.SpeechError, OSError) as error:
        return _fail(f"prompts not rendered: {error}")
    return EXIT_OK


def cmd_worker(args: argparse.Namespace) -> int:
    """`worker recycle|status`: ask this node's mailbox UM service over SIP (loopback TCP, else MTLS)."""
    import ssl

    from certs.pki import CA_NAME, paths
    from um.control import control

    config = _load(args)
    m, address = config.mailbox, config.node.listen_address
    host = "127.0.0.1" if address in ("0.0.0.0", "::") else address
    context = None
    if m.startup_mode == "tls":
        context = ssl.create_default_context(cafile=str(paths(config.node.certs_dir, CA_NAME)[0]))
        crt, key = paths(config.node.certs_dir, config.node.name)
        context.load_cert_chain(str(crt), str(key))
        context.check_hostname = False  # the pool CA is the trust anchor; the node name is ours
    port = m.sip_tls_port if context else m.sip_tcp_port
    try:
        status, reason, result = control(host, port, args.action, context)
    except OSError as error:
        return _fail(f"cannot reach the mailbox UM service on {host}:{port}: {error}")
    print(json.dumps(result, indent=1))
    if status != 200:
        return _fail(f"worker {args.action}: {status} {reason}")
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    config = _load(args)
    if args.roles:
        config = with_roles(config, args.roles)
    from edge.node import runtime

    return runtime.serve(config, log_format=args.log_format or config.log.format,
                         config_path=args.config, turn_worker=args.turn_worker)


def cmd_status(args: argparse.Namespace) -> int:
    """`status`: the running node's own snapshot (what its status page shows), from its web role."""
    import urllib.error
    import urllib.request

    config = _load(args)
    host = config.node.listen_address
    host = "127.0.0.1" if host == "0.0.0.0" else "::1" if host == "::" else host
    url = f"http://{'[' + host + ']' if ':' in host else host}:{config.web.http_port}/v1/status"
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            status = json.loads(answer.read())
    except (urllib.error.URLError, OSError, ValueError) as error:
        return _fail(f"cannot read {url} ({getattr(error, 'reason', error)}): is `umedge serve` running "
                     "with the web role?")
    if args.json:
        print(json.dumps(status, indent=1))
        return EXIT_OK
    allocations = status["allocations"]
    print(f"node {status['node']} ({status['fqdn']}), roles {','.join(status['roles'])}, "
          f"up {status['uptime_seconds']:.0f}s{', DRAINING' if status['draining'] else ''}")
    print(f"allocations {allocations['active']} ("
          + ", ".join(f"{k} {v}" for k, v in allocations["by_transport"].items())
          + f"), calls {status['calls']['active']}")
    ports = status.get("relay_ports") or {}
    if ports:
        print(f"relay ports: {ports['free']} free of {ports['size']} ({ports['in_use']} in use), "
              f"{ports['exhausted_refusals']} Allocate(s) refused for want of a port")
    relayed = status.get("relayed") or {}
    if relayed:
        print(f"relayed: {relayed['packets_to_peer']} packets to peers, {relayed['packets_to_client']} to clients")
    offload = status.get("kernel_offload") or {}
    if offload:
        print(f"kernel offload ({offload['mode']}): {'on' if offload['active'] else 'off'}, {offload['reason']}"
              + (f"; {offload['channels']} channel(s), {relayed.get('offloaded_packets_to_peer', 0)} + "
                 f"{relayed.get('offloaded_packets_to_client', 0)} packets in the kernel" if offload["active"] else ""))
        native = offload.get("native") or {}
        if native and not offload["active"]:
            print(f"native forwarder ({native['mode']}): {'on' if native['active'] else 'off'}, {native['reason']}"
                  + (f"; {native['channels']} channel(s), {relayed.get('offloaded_packets_to_peer', 0)} + "
                     f"{relayed.get('offloaded_packets_to_client', 0)} packets in C" if native["active"] else ""))
    pool = status["pool"]
    print(f"pool ({pool['store']}{', degraded' if pool['degraded'] else ''}): "
          + (", ".join(f"{m['name']} {m['relay']} load {m['load']:.1%}" for m in pool["members"]) or "-"))
    for server in status["mediation"]:
        print(f"mediation {server['address']}: {server['registration']}, keepalive "
              f"{'ok' if server['keepalive_ok'] else 'failed'}, failures {server['failures']}")
    from edge.node.workerview import slot_lines

    for line in slot_lines(status):
        print(line)
    for cert in status["certificates"]:
        print(f"certificate {cert['name']}: {cert['days_left']} days left"
              + (" (renew soon)" if cert["expiring_soon"] else ""))
    return EXIT_OK


def cmd_probe(args: argparse.Namespace) -> int:
    """`probe`: check from here that media can cross the edge (exit 0 only if it can)."""
    import asyncio
    import ipaddress

    from edge.node.probe import probe

    config = _load(args)
    e = config.edge

    def read(path: str | None) -> str | None:
        if not path:
            return None
        try:
            return Path(path).read_text().strip()
        except OSError as error:
            raise SystemExit(_fail(f"cannot read {path}: {error.strerror}", EXIT_CONFIG)) from None

    if args.ca and not Path(args.ca).is_file():
        return _fail(f"--ca {args.ca}: no such file", EXIT_CONFIG)
    if args.echo_address:
        try:
            ipaddress.ip_address(args.echo_address)
        except ValueError:
            return _fail(f"--echo-address {args.echo_address}: not an IP address", EXIT_CONFIG)
    report = asyncio.run(probe(
        args.edge, args.udp_port or e.turn_udp_port, args.tcp_port or e.turn_tcp_port,
        args.tls_port or e.turn_tls_port, args.realm or e.realm, args.timeout, args.ca,
        read(args.secret_file), args.token_from, read(args.api_key_file),
        args.identity or f"sip:probe@{config.node.domain}", args.echo_address))
    print(json.dumps(report.as_dict(), indent=1) if args.json else report.text())
    return EXIT_OK if report.media_ok else EXIT_FAILURE


def cmd_mediation(args: argparse.Namespace) -> int:
    """`mediation status`: what the running node last recorded about each mediation server."""
    import time

    from edge.mediation.setup import enabled, status_path

    config = _load(args)
    path = status_path(config)
    if not enabled(config):
        print("mediation: not configured ([mediation] servers and domain are empty)")
        return EXIT_OK
    try:
        status = json.loads(path.read_text())
    except (OSError, ValueError):
        return _fail(f"no mediation status at {path}: is `umedge serve` running with the edge role?")
    if args.json:
        print(json.dumps(status, indent=1))
        return EXIT_OK
    now = time.time()

    def ago(stamp: float | None) -> str:
        return "-" if stamp is None else f"{now - stamp:.0f}s ago"

    print(f"mediation ({config.mediation.mode} mode), updated {ago(status.get('updated'))}")
    for server in status.get("servers", []):
        expires = server.get("expires_at")
        left = f"{expires - now:.0f}s" if expires else "-"
        print(f"{'*' if server.get('active') else ' '} {server['address']}  registration={server['registration']}"
              f"  expires_in={left}  keepalive={'ok' if server.get('keepalive_ok') else 'failed'}"
              f" ({ago(server.get('last_keepalive'))})  failures={server.get('failures', 0)}"
              + (f"  last_error={server['last_error']}" if server.get("last_error") else ""))
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="umedge", description="umedge: UM SIP stack and A/V edge for voice")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--config", metavar="PATH", help="config file (default: the embedded config.toml)")
        return p

    serve = with_config(sub.add_parser("serve", help="run the node's roles"))
    serve.add_argument("--roles", type=parse_roles, metavar="all|LIST",
                       help=f"all, or a comma list of {','.join(ROLES)} (default: [node].roles)")
    serve.add_argument("--log-format", choices=LOG_FORMATS, help="log line format on stderr")
    serve.add_argument("--turn-worker", type=int, help=argparse.SUPPRESS)  # set by [edge] workers
    serve.set_defaults(func=cmd_serve)

    check = with_config(sub.add_parser("check-config", help="validate a config file"))
    check.set_defaults(func=cmd_check_config)

    ports = with_config(sub.add_parser("ports", help="the ports table for this config"))
    ports.add_argument("--json", action="store_true")
    ports.set_defaults(func=cmd_ports)

    fw = with_config(sub.add_parser("firewall", help="inbound firewall rules for the listeners"))
    fw.add_argument("--format", required=True, choices=firewall.FORMATS)
    fw.set_defaults(func=cmd_firewall)

    certs = with_config(sub.add_parser("certs", help="pool CA and node certificates"))
    certs.add_argument("action", choices=("init", "issue", "show"))
    certs.add_argument("name", nargs="?", help="certificate name (for issue)")
    certs.add_argument("--san", action="append", metavar="NAME|IP", help="extra subject alternative name")
    certs.set_defaults(func=cmd_certs)

    status = with_config(sub.add_parser("status", help="what the running node is doing now"))
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_status)

    probe = with_config(sub.add_parser("probe", help="check that media can cross an edge from here"))
    probe.add_argument("--edge", required=True, metavar="HOST", help="the edge's TURN address or name")
    probe.add_argument("--udp-port", type=int, help="TURN UDP port (default: [edge].turn_udp_port)")
    probe.add_argument("--tcp-port", type=int, help="TURN TCP port (default: [edge].turn_tcp_port)")
    probe.add_argument("--tls-port", type=int, help="TURN TLS port (default: [edge].turn_tls_port)")
    probe.add_argument("--realm", help="TURN realm (default: [edge].realm)")
    probe.add_argument("--token-from", metavar="URL", help="token API, e.g. https://EDGE:4443/v1/credentials")
    probe.add_argument("--api-key-file", metavar="FILE", help="bearer key for --token-from")
    probe.add_argument("--secret-file", metavar="FILE", help="mint the token from this shared secret")
    probe.add_argument("--identity", metavar="URI", help="token identity (default: sip:probe@[node].domain)")
    probe.add_argument("--ca", metavar="FILE", help="CA to trust for TLS (the pool's ca.crt)")
    probe.add_argument("--echo-address", metavar="ADDR",
                       help="address the edge relays to; the probe's echo socket binds there (default: the "
                            "echo's address as the edge sees it; the edge denies loopback and private ones "
                            "unless [edge] allowed_peer_networks opens them)")
    probe.add_argument("--timeout", type=float, default=3.0, metavar="SECONDS")
    probe.add_argument("--json", action="store_true")
    probe.set_defaults(func=cmd_probe)

    mediation = with_config(sub.add_parser("mediation", help="mediation server association"))
    mediation.add_argument("action", choices=("status",))
    mediation.add_argument("--json", action="store_true")
    mediation.set_defaults(func=cmd_mediation)

    token = with_config(sub.add_parser("token", help="media relay tokens (TURN REST API credentials), "
                                                     "or UM web services tokens (--web)"))
    token.add_argument("action", choices=("issue",))
    token.add_argument("--identity", metavar="URI", help="SIP URI, e.g. sip:alice@example.test (media token)")
    token.add_argument("--web", action="store_true",
                       help="a UM web services token (JWT) for --mailbox with --scope instead of a media token")
    token.add_argument("--mailbox", metavar="EXT", help="--web: the mailbox (extension) the token acts on; "
                                                         "may be left out with --scope admin")
    token.add_argument("--scope", metavar="LIST", help="--web: a comma list of play, pin-reset, voicemail, admin")
    token.add_argument("--ttl", type=int, metavar="SECONDS",
                       help="lifetime in seconds (media: default and cap [auth].max_token_lifetime; "
                            "--web: default 3600, at most 90 days)")
    token.set_defaults(func=cmd_token)

    worker = with_config(sub.add_parser("worker", help="UM worker slots: recycle now, or show their state"))
    worker.add_argument("action", choices=("recycle", "status"))
    worker.set_defaults(func=cmd_worker)

    voicemail = with_config(sub.add_parser("voicemail", help="voicemail messages: list, export, PIN reset"))
    voicemail.add_argument("action", choices=("list", "export", "pin-reset", "outbox"))
    voicemail.add_argument("id", nargs="?", metavar="ID|EXT", help="message id (export) or mailbox (pin-reset)")
    voicemail.add_argument("file", nargs="?", metavar="FILE.wav", help="where export writes the message")
    voicemail.add_argument("--mailbox", metavar="EXT", help="list only this mailbox")
    voicemail.add_argument("--json", action="store_true", help="list as JSON")
    voicemail.add_argument("--pcm", action="store_true", help="export as 16-bit PCM instead of the stored G.711")
    voicemail.add_argument("--pin", metavar="DIGITS", help="pin-reset: this PIN instead of a generated one")
    voicemail.add_argument("--all", action="store_true", help="outbox retry: every queued and dead message")
    voicemail.set_defaults(func=cmd_voicemail)
    prompts = with_config(sub.add_parser("prompts", help="spoken prompts: render the catalogue with espeak-ng"))
    prompts.add_argument("action", choices=("render",))
    prompts.add_argument("--lang", choices=("en", "de"), help="only this language (default: the dial plans')")
    prompts.add_argument("--force", action="store_true", help="render every clip again")
    prompts.set_defaults(func=cmd_prompts)

    from edge.node import console_cli

    console_cli.register(sub, with_config)  # sessions, calls (the operator's console)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as error:
        for problem in error.problems:
            print(problem, file=sys.stderr)
        return EXIT_CONFIG


if __name__ == "__main__":
    sys.exit(main())
