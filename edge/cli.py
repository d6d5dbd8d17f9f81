"""The `umedge` command: serve, check-config, ports, firewall, certs.

Exit codes: 0 success, 1 a runtime failure (port in use, PKI problem),
2 invalid configuration or arguments.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from certs import pki
from edge import firewall
from edge.config import ConfigError, load, with_roles
from edge.config_schema import LOG_FORMATS, ROLES, Config
from edge.listeners import format_table, listeners

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
    sys.stdout.write(firewall.render(listeners(config), config.node.name, args.format))
    return EXIT_OK


def cmd_certs(args: argparse.Namespace) -> int:
    from edge.node_identity import ensure_certificates, node_sans

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
            path = pki.issue(certs_dir, args.name, sans)
            print(f"issued {path} (key {pki.paths(certs_dir, args.name)[1]}, mode 0600)")
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


def cmd_serve(args: argparse.Namespace) -> int:
    config = _load(args)
    if args.roles:
        config = with_roles(config, args.roles)
    from edge import runtime

    return runtime.serve(config, log_format=args.log_format or config.log.format,
                         config_path=args.config, turn_worker=args.turn_worker)


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
