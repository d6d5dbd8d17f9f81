"""Load and validate config.toml: every problem reported at once, one line each.

A user's file overlays the embedded default (config.toml shipped in the
package), so defaults live in one commented file. Each problem names the
file, the [section].key, the bad value and what is allowed.
"""

from __future__ import annotations

import difflib
import ipaddress
import tomllib
from dataclasses import dataclass, fields, replace
from importlib import resources
from pathlib import Path
from typing import Any

from edge.node.listeners import collisions, listeners
from edge.node.schema import EMBEDDED, SECTIONS, Config
from um.configkeys import Invalid


@dataclass(frozen=True)
class Problem:
    source: str
    where: str  # "[section].key" or "[section]"
    message: str

    def __str__(self) -> str:
        return f"{self.source}: {self.where}: {self.message}"


class ConfigError(Exception):
    """The config is invalid; `problems` lists every reason."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


def embedded_default_text() -> str:
    return resources.files("edge.node").joinpath("default_config.toml").read_text(encoding="utf-8")


def _show(value: Any, secret: bool) -> str:
    if secret:
        return "<secret not shown>"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list):
        return "[" + ", ".join(_show(v, False) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if not isinstance(value, dict) else "a table"


def _suggest(name: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(name, candidates, n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def _check_sections(doc: dict[str, Any], source: str, problems: list[Problem]) -> None:
    for section, table in doc.items():
        if section not in SECTIONS:
            problems.append(Problem(source, f"[{section}]", "unknown section; allowed sections: "
                                    + ", ".join(SECTIONS) + _suggest(section, list(SECTIONS))))
            continue
        if not isinstance(table, dict):
            problems.append(Problem(source, f"[{section}]", "must be a table"))
            continue
        known = [f.name for f in fields(SECTIONS[section])]
        for name in table:
            if name not in known:
                problems.append(Problem(source, f"[{section}].{name}", "unknown key; allowed keys in "
                                        f"[{section}]: " + ", ".join(known) + _suggest(name, known)))


def _build_section(section: str, merged: dict[str, Any], origin: dict[str, str],
                   problems: list[Problem]) -> Any:
    cls = SECTIONS[section]
    values = {}
    for f in fields(cls):
        raw = merged.get(f.name)
        try:
            values[f.name] = f.metadata["check"](raw)
        except Invalid as bad:
            problems.append(Problem(origin[f.name], f"[{section}].{f.name}",
                                    f"{_show(raw, f.metadata['secret'])} is not allowed; "
                                    f"allowed: {bad.allowed}"))
            values[f.name] = None
    return cls(**values)


def _cross_checks(config: Config, source: str, problems: list[Problem]) -> None:
    w, e = config.worker, config.edge
    if w.rtp_port_min is not None and w.rtp_port_max is not None and w.rtp_port_min > w.rtp_port_max:
        problems.append(Problem(source, "[worker].rtp_port_min", f"{w.rtp_port_min} is greater than "
                                f"[worker].rtp_port_max {w.rtp_port_max}; allowed: rtp_port_min <= rtp_port_max"))
    if e.relay_port_min is not None and e.relay_port_max is not None and e.relay_port_min > e.relay_port_max:
        problems.append(Problem(source, "[edge].relay_port_min", f"{e.relay_port_min} is greater than "
                                f"[edge].relay_port_max {e.relay_port_max}; allowed: relay_port_min <= relay_port_max"))
    if w.media_via_edge and w.max_calls_per_source >= e.max_allocations_per_user:
        problems.append(Problem(source, "[worker].max_calls_per_source", f"{w.max_calls_per_source} is not below "
                                f"[edge].max_allocations_per_user {e.max_allocations_per_user}, which caps the "
                                "worker's relay allocations (one per call) with media_via_edge; allowed: a smaller "
                                "number, so one source cannot take them all"))
    if e.alternate_address:
        problems.extend(Problem(source, where, message) for where, message in _discovery_problems(config))
    from um.delivery.setup import problems as delivery_problems

    problems.extend(Problem(source, where, message) for where, message in delivery_problems(config))
    from um.attendants import config_problems as attendant_problems

    problems.extend(Problem(source, where, message) for where, message in attendant_problems(config.callrouter))
    for a, b in collisions(listeners(config)):
        problems.append(Problem(source, b.key, f"{b.port} collides with {a.key} ({a.l4.upper()} {a.port} "
                                f"on {a.address}, {a.service}); allowed: a port no other listener uses"))


def _discovery_problems(config: Config) -> list[tuple[str, str]]:
    """RFC 5780 needs two distinct specific addresses of one family and two ports."""
    e = config.edge
    primary, alternate = ipaddress.ip_address(e.listen_address), ipaddress.ip_address(e.alternate_address)
    found = []
    if primary.is_unspecified:
        found.append(("[edge].listen_address", f'"{e.listen_address}" is not allowed with [edge].alternate_address; '
                      "allowed: a specific address of this host (responses name it in OTHER-ADDRESS)"))
    if alternate.version != primary.version or alternate == primary or alternate.is_unspecified:
        found.append(("[edge].alternate_address", f'"{e.alternate_address}" is not allowed; allowed: another '
                      f"specific IPv{primary.version} address of this host than [edge].listen_address"))
    if e.alternate_port == e.turn_udp_port:
        found.append(("[edge].alternate_port", f"{e.alternate_port} is not allowed; allowed: a port other than "
                      "[edge].turn_udp_port"))
    return found


def load(path: str | Path | None = None) -> Config:
    """Read the embedded default, overlay `path` if given, validate everything.

    Raises ConfigError listing every problem; relative paths in [node] are
    made absolute against the config file's directory (or the working
    directory for the embedded default).
    """
    problems: list[Problem] = []
    default_doc = tomllib.loads(embedded_default_text())
    source, base_dir, user_doc = EMBEDDED, Path.cwd(), {}
    if path is not None:
        source, base_dir = str(path), Path(path).resolve().parent
        try:
            with open(path, "rb") as handle:
                user_doc = tomllib.load(handle)
        except OSError as error:
            raise ConfigError([Problem(source, "file", f"cannot read: {error.strerror}")]) from None
        except tomllib.TOMLDecodeError as error:
            raise ConfigError([Problem(source, "file", f"not valid TOML: {error}")]) from None
    _check_sections(user_doc, source, problems)

    built: dict[str, Any] = {}
    for section in SECTIONS:
        merged = dict(default_doc.get(section, {}))
        origin = {name: EMBEDDED for name in merged}
        user_table = user_doc.get(section, {})
        if isinstance(user_table, dict):
            for name, value in user_table.items():
                merged[name] = value
                origin[name] = source
        for f in fields(SECTIONS[section]):
            origin.setdefault(f.name, source)
        built[section] = _build_section(section, merged, origin, problems)
    config = Config(**built, source=source)
    _cross_checks_partial(config, source, problems)
    if problems:
        raise ConfigError(problems)
    node = config.node
    absolute = replace(node, state_dir=str((base_dir / node.state_dir).resolve()),
                       certs_dir=str((base_dir / node.certs_dir).resolve()))
    return replace(config, node=absolute)


def _cross_checks_partial(config: Config, source: str, problems: list[Problem]) -> None:
    """Cross-checks that still make sense when some keys failed on their own."""
    try:
        _cross_checks(config, source, problems)
    except (TypeError, AttributeError, ValueError):
        pass  # a key the check needs is itself invalid and already reported


def with_roles(config: Config, roles: tuple[str, ...]) -> Config:
    """The same config running only `roles` (the --roles of `umedge serve`), re-checked."""
    chosen = replace(config, node=replace(config.node, roles=roles))
    problems: list[Problem] = []
    _cross_checks(chosen, config.source, problems)
    if problems:
        raise ConfigError(problems)
    return chosen
