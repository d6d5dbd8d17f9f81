"""UM directory data: IP gateways, hunt groups, dial plans, mailboxes and mailbox servers.

Plain values parsed from TOML tables (the config's [callrouter]/[directory]
keys, or the directory file they name) and the lookups the call router
makes per call. Parsing raises `DirectoryError` with a message saying what
is allowed; um.config turns that into a config problem.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

GATEWAY_STATUSES = ("enabled", "disabled", "no-new-calls")
URI_TYPES = ("telephone-extension", "sip-uri", "e164")
SECURITY = ("unsecured", "sip-secured", "secured")
TRANSPORTS = ("tcp", "tls")
CONTACT_SCHEMES = ("", "sips", "sip-tls")  # "": mirror the gateway's Request-URI (um.sip.uri.secure_contact)
LANGUAGES = ("en", "de")  # of the voicemail emails (um.delivery)
_EMAIL = re.compile(r"^$|^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9.-]{1,253}$|"
                    r"^[A-Za-z0-9.!#$%&'*+/=?^_`~-]{0,40}\{extension\}[A-Za-z0-9.!#$%&'*+/=?^_`~-]{0,40}"
                    r"@[A-Za-z0-9.-]{1,253}$")
LOCAL = "local"  # a mailbox server name meaning "this node"
_NUMBER = re.compile(r"^\+?[0-9]{1,32}$")
_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,62})$")
_HOST = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*\.?$")


class DirectoryError(ValueError):
    """A directory value is invalid; the message says what is allowed."""


def _table(item: Any, what: str, required: tuple[str, ...], optional: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise DirectoryError(f"each {what} is a table such as {{ {', '.join(f'{k} = ...' for k in required)} }}")
    unknown = set(item) - set(required) - set(optional)
    if unknown:
        raise DirectoryError(f"unknown key {sorted(unknown)[0]!r} in a {what}; allowed keys: "
                             + ", ".join((*required, *optional)))
    missing = [k for k in required if k not in item]
    if missing:
        raise DirectoryError(f"a {what} needs {', '.join(missing)}")
    return {**optional, **item}


def _str(value: Any, what: str, pattern: re.Pattern[str] | None = None, allowed: str = "") -> str:
    if not isinstance(value, str) or (pattern is not None and not pattern.match(value)):
        raise DirectoryError(f"{what} {value!r}: allowed {allowed or 'a string'}")
    return value


def _choice(value: Any, what: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise DirectoryError(f"{what} {value!r}: allowed " + " or ".join(f'"{c}"' for c in choices))
    return value


def _int(value: Any, what: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise DirectoryError(f"{what} {value!r}: allowed an integer {lo}-{hi}")
    return value


def _optional_int(value: Any, what: str, lo: int, hi: int) -> int:
    """An integer lo-hi, or 0 for "the default"."""
    if isinstance(value, bool) or not isinstance(value, int) or not (value == 0 or lo <= value <= hi):
        raise DirectoryError(f"{what} {value!r}: allowed an integer {lo}-{hi}, or 0 for the [worker] default")
    return value


def _numbers(value: Any, what: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise DirectoryError(f"{what}: allowed a list of numbers as strings, such as [\"5001\"]")
    return tuple(_str(v, what, _NUMBER, "digits with an optional leading '+'") for v in value)


# --- gateways ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Gateway:
    """A UM IP gateway: an IP, a CIDR or an FQDN (resolved, and matched against TLS certificate names)."""

    address: str
    status: str = "enabled"
    name: str = ""
    contact_scheme: str = ""  # "sips", "sip-tls", or "": mirror the scheme of the gateway's Request-URI
    refer: bool = True  # takes SIP REFER (RFC 3515) for auto attendant transfers; false: 302 before answer

    @property
    def network(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
        try:
            return ipaddress.ip_network(self.address, strict=False)
        except ValueError:
            return None

    @property
    def label(self) -> str:
        return self.name or self.address


def _contact_scheme(value: Any) -> str:
    if value not in CONTACT_SCHEMES:
        raise DirectoryError(f'gateway contact_scheme {value!r}: allowed "sips" or "sip-tls" '
                             "(or leave it out: mirror the scheme of the gateway's Request-URI)")
    return str(value)


def parse_gateways(value: Any) -> tuple[Gateway, ...]:
    if not isinstance(value, list):
        raise DirectoryError('a list of tables such as [{ address = "192.0.2.10", status = "enabled" }]')
    gateways = []
    for item in value:
        table = _table(item, "gateway", ("address",), {"status": "enabled", "name": "", "contact_scheme": "",
                                                       "refer": True})
        address = _str(table["address"], "gateway address")
        try:
            ipaddress.ip_network(address, strict=True)
        except ValueError:
            if "/" in address or not _HOST.match(address):
                raise DirectoryError(f"gateway address {address!r}: allowed an IP address, a CIDR "
                                     "(host bits zero) or an FQDN") from None
        gateways.append(Gateway(address.lower(), _choice(table["status"], "gateway status", GATEWAY_STATUSES),
                                _str(table["name"], "gateway name"),
                                _contact_scheme(table["contact_scheme"]), _bool(table["refer"], "gateway refer")))
    return tuple(gateways)


def _bool(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise DirectoryError(f"{what} {value!r}: allowed true or false")
    return value


# --- hunt groups and dial plans ----------------------------------------------------------------
@dataclass(frozen=True)
class HuntGroup:
    pilot: str
    dial_plan: str
    gateway: str = ""  # "" for every gateway, else a gateway's address or name


def parse_hunt_groups(value: Any) -> tuple[HuntGroup, ...]:
    if not isinstance(value, list):
        raise DirectoryError('a list of tables such as [{ pilot = "5000", dial_plan = "default" }]')
    groups = []
    for item in value:
        table = _table(item, "hunt group", ("pilot", "dial_plan"), {"gateway": ""})
        groups.append(HuntGroup(_str(table["pilot"], "pilot number", _NUMBER, "digits with an optional '+'"),
                                _str(table["dial_plan"], "dial plan name", _NAME, "a dial plan name"),
                                _str(table["gateway"], "hunt group gateway").lower()))
    return tuple(groups)


@dataclass(frozen=True)
class DialPlan:
    name: str
    extension_length: int = 4
    uri_type: str = "telephone-extension"
    voip_security: str = "unsecured"
    access_numbers: tuple[str, ...] = ()
    auto_attendant_numbers: tuple[str, ...] = ()
    # Dialing rules of play-on-phone: regexes a number must match whole; () for the plan's own extensions.
    allowed_numbers: tuple[str, ...] = ()
    language: str = "en"  # the plan's language: voicemail emails (um.delivery), prompts: "en" or "de"
    # The plan's PIN policy (Exchange's UM mailbox policy); 0: [worker] pin_min_length / pin_max_failures.
    pin_min_length: int = 0
    pin_max_failures: int = 0

    @property
    def secured(self) -> bool:
        """SIP secured and secured dial plans need MTLS signalling (and sips: workers)."""
        return self.voip_security != "unsecured"

    def allows(self, number: str) -> bool:
        """The dialing rules let a mailbox of this plan have `number` called (play-on-phone)."""
        patterns = self.allowed_numbers or (f"[0-9]{{{self.extension_length}}}",)
        return any(re.fullmatch(pattern, number) for pattern in patterns)


def _patterns(value: Any, what: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise DirectoryError(f"{what}: allowed a list of regular expressions (a number must match one whole), "
                             'such as ["1[0-9]{3}", "0[1-9][0-9]{9}"]')
    for pattern in value:
        _str(pattern, what, None, "regular expressions as strings")
        try:
            re.compile(pattern)
        except re.error as error:
            raise DirectoryError(f"{what} {pattern!r}: not a regular expression ({error})") from None
    return tuple(value)


def parse_dial_plans(value: Any) -> tuple[DialPlan, ...]:
    if not isinstance(value, list):
        raise DirectoryError('a list of tables such as [{ name = "default", extension_length = 4 }]')
    plans = []
    for item in value:
        table = _table(item, "dial plan", ("name",), {
            "extension_length": 4, "uri_type": "telephone-extension", "voip_security": "unsecured",
            "access_numbers": [], "auto_attendant_numbers": [], "allowed_numbers": [], "language": "en",
            "pin_min_length": 0, "pin_max_failures": 0})
        plans.append(DialPlan(_str(table["name"], "dial plan name", _NAME, "letters, digits, '.', '_', '-'"),
                              _int(table["extension_length"], "extension_length", 1, 20),
                              _choice(table["uri_type"], "uri_type", URI_TYPES),
                              _choice(table["voip_security"], "voip_security", SECURITY),
                              _numbers(table["access_numbers"], "access_numbers"),
                              _numbers(table["auto_attendant_numbers"], "auto_attendant_numbers"),
                              _patterns(table["allowed_numbers"], "allowed_numbers"),
                              _choice(table["language"], "language", LANGUAGES),
                              _optional_int(table["pin_min_length"], "pin_min_length", 4, 24),
                              _optional_int(table["pin_max_failures"], "pin_max_failures", 1, 100)))
    names = [p.name for p in plans]
    if len(set(names)) != len(names):
        raise DirectoryError("dial plan names must be unique")
    return tuple(plans)


# --- mailboxes and servers ---------------------------------------------------------------------
@dataclass(frozen=True)
class MailboxServer:
    """A mailbox server's UM service: how a call router reaches it."""

    name: str
    address: str
    tcp_port: int = 5062
    tls_port: int = 5063
    transport: str = "tcp"

    @property
    def port(self) -> int:
        return self.tls_port if self.transport == "tls" else self.tcp_port


def _server_address(value: Any) -> str:
    """A host name, an IPv4 address or an IPv6 address with or without [ ] (kept without: URIs bracket it)."""
    if isinstance(value, str):
        text = value[1:-1] if value.startswith("[") and value.endswith("]") else value
        try:
            return str(ipaddress.ip_address(text))
        except ValueError:
            pass
    return _str(value, "server address", _HOST, "an IP address (IPv6 with or without [ ]) or a host name")


def parse_servers(value: Any) -> tuple[MailboxServer, ...]:
    if not isinstance(value, list):
        raise DirectoryError('a list of tables such as [{ name = "mbx2", address = "192.0.2.20" }]')
    servers = []
    for item in value:
        table = _table(item, "mailbox server", ("name", "address"),
                       {"tcp_port": 5062, "tls_port": 5063, "transport": "tcp"})
        name = _str(table["name"], "server name", _NAME, "letters, digits, '.', '_', '-'")
        if name == LOCAL:
            raise DirectoryError(f'server name "{LOCAL}" is reserved for this node')
        servers.append(MailboxServer(name, _server_address(table["address"]),
                                     _int(table["tcp_port"], "tcp_port", 1, 65535),
                                     _int(table["tls_port"], "tls_port", 1, 65535),
                                     _choice(table["transport"], "transport", TRANSPORTS)))
    return tuple(servers)


@dataclass(frozen=True)
class Mailbox:
    extension: str
    server: str = LOCAL
    dial_plan: str = ""  # "" for every dial plan
    name: str = ""
    sip_address: str = ""
    e164: str = ""
    email: str = ""  # where its voicemails are mailed ([delivery]); "" for none


def parse_mailboxes(value: Any) -> tuple[Mailbox, ...]:
    """Mailbox tables; `extension` may be a range "1000-1009" (one mailbox each)."""
    if not isinstance(value, list):
        raise DirectoryError('a list of tables such as [{ extension = "1000-1009", server = "local" }]')
    found = []
    for item in value:
        table = _table(item, "mailbox", ("extension",),
                       {"server": LOCAL, "dial_plan": "", "name": "", "sip_address": "", "e164": "", "email": ""})
        extension = _str(table["extension"], "extension", re.compile(r"^[0-9]{1,20}(-[0-9]{1,20})?$"),
                         'digits, or a range "1000-1009"')
        server = _str(table["server"], "mailbox server", _NAME, "a server name or \"local\"")
        plan, name = _str(table["dial_plan"], "dial_plan"), _str(table["name"], "mailbox name")
        sip_address = _str(table["sip_address"], "sip_address").lower()
        e164 = _str(table["e164"], "e164")
        email = _str(table["email"], "email", _EMAIL, 'an address such as "alice@example.com" ("{extension}" '
                     "stands for the extension, e.g. in a range)")
        if e164 and not re.match(r"^\+[0-9]{2,15}$", e164):
            raise DirectoryError(f"e164 {e164!r}: allowed '+' and 2-15 digits")
        first, _, last = extension.partition("-")
        if last:
            if len(first) != len(last) or int(last) < int(first) or int(last) - int(first) > 100_000:
                raise DirectoryError(f"extension range {extension!r}: allowed same-length bounds, low <= high, "
                                     "at most 100000 numbers")
            if name or sip_address or e164:
                raise DirectoryError("a mailbox range cannot have name, sip_address or e164")
            found += [Mailbox(str(n).zfill(len(first)), server, plan,
                              email=email.replace("{extension}", str(n).zfill(len(first))))
                      for n in range(int(first), int(last) + 1)]
        else:
            found.append(Mailbox(first, server, plan, name, sip_address, e164, email.replace("{extension}", first)))
    return tuple(found)


@dataclass
class Directory:
    """The lookups the call router makes: extension/SIP address/E.164 -> mailbox -> server."""

    dial_plans: dict[str, DialPlan] = field(default_factory=dict)
    mailboxes: tuple[Mailbox, ...] = ()
    servers: dict[str, MailboxServer] = field(default_factory=dict)
    _by_extension: dict[tuple[str, str], Mailbox] = field(default_factory=dict)
    _by_sip: dict[str, Mailbox] = field(default_factory=dict)
    _by_e164: dict[str, Mailbox] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for mailbox in self.mailboxes:
            self._by_extension[(mailbox.dial_plan, mailbox.extension)] = mailbox
            if mailbox.sip_address:
                self._by_sip[mailbox.sip_address] = mailbox
            if mailbox.e164:
                self._by_e164[mailbox.e164] = mailbox

    def _extension(self, plan: DialPlan, number: str) -> Mailbox | None:
        for candidate in (number, number[-plan.extension_length:]):
            if len(candidate) != plan.extension_length:
                continue
            found = self._by_extension.get((plan.name, candidate)) or self._by_extension.get(("", candidate))
            if found is not None:
                return found
        return None

    def find(self, plan: DialPlan, user: str | None, host: str | None = None) -> Mailbox | None:
        """The mailbox a called party names, per the dial plan's URI type."""
        if not user:
            return None
        number = user.split(";", 1)[0]
        if plan.uri_type == "sip-uri":
            if host:
                found = self._by_sip.get(f"{number}@{host}".lower())
                if found is not None:
                    return found
        elif plan.uri_type == "e164" and number.startswith("+"):
            found = self._by_e164.get(number)
            if found is not None:
                return found
        digits = number.lstrip("+")
        if not digits.isdigit():
            return None
        return self._extension(plan, digits)


def load_file(path: str | Path) -> tuple[tuple[Mailbox, ...], tuple[MailboxServer, ...]]:
    """A directory file: TOML with `mailboxes` and `servers` arrays (the [directory] keys' format)."""
    with open(path, "rb") as handle:
        doc = tomllib.load(handle)
    unknown = set(doc) - {"mailboxes", "servers"}
    if unknown:
        raise DirectoryError(f"{path}: unknown key {sorted(unknown)[0]!r}; allowed: mailboxes, servers")
    return parse_mailboxes(doc.get("mailboxes", [])), parse_servers(doc.get("servers", []))


def assemble(dial_plans: tuple[DialPlan, ...], mailboxes: tuple[Mailbox, ...],
             servers: tuple[MailboxServer, ...], directory_file: str = "") -> Directory:
    """The directory of the config's keys plus the file they name (raises on a bad file)."""
    all_mailboxes, all_servers = list(mailboxes), list(servers)
    if directory_file:
        file_mailboxes, file_servers = load_file(directory_file)
        all_mailboxes += file_mailboxes
        all_servers += file_servers
    return Directory({p.name: p for p in dial_plans}, tuple(all_mailboxes), {s.name: s for s in all_servers})


class DirectorySource(Protocol):
    """Where a directory comes from: the [callrouter] keys (um.config.CallRouterConfig is one)."""

    @property
    def dial_plans(self) -> tuple[DialPlan, ...]: ...

    @property
    def hunt_groups(self) -> tuple[HuntGroup, ...]: ...

    @property
    def mailboxes(self) -> tuple[Mailbox, ...]: ...

    @property
    def mailbox_servers(self) -> tuple[MailboxServer, ...]: ...

    @property
    def directory_file(self) -> str: ...


def load_directory(source: DirectorySource) -> Directory:
    """The directory `source` describes: its keys plus the file it names (raises on a bad file)."""
    return assemble(source.dial_plans, source.mailboxes, source.mailbox_servers, source.directory_file)


class CallDirectory:
    """What a worker asks per call: the dial plan a pilot number selects, the mailbox a user names."""

    def __init__(self, directory: Directory, hunt_groups: tuple[HuntGroup, ...] = (),
                 attendants: tuple[Any, ...] = ()) -> None:
        self.directory = directory
        self.plans = directory.dial_plans
        self.hunt = {g.pilot: g.dial_plan for g in hunt_groups}
        self.attendants = {a.number: a for a in attendants}  # um.attendants.AutoAttendant by number

    def attendant(self, number: str | None) -> Any:
        return self.attendants.get(number or "")

    def plan_for(self, pilot: str | None) -> DialPlan | None:
        name = self.hunt.get(pilot or "")
        if name is not None and name in self.plans:
            return self.plans[name]
        for plan in self.plans.values():
            if pilot in plan.access_numbers:
                return plan
        return None

    def mailbox(self, plan: DialPlan | None, user: str | None, host: str | None = None) -> str | None:
        if plan is None or not user:
            return None
        found = self.directory.find(plan, user, host)
        return found.extension if found is not None else None

    def known(self, extension: str) -> bool:
        return any(self.mailbox(plan, extension) for plan in self.plans.values())

    def plan_of(self, extension: str) -> DialPlan | None:
        """The dial plan of a mailbox (the first that has the extension), for its PIN policy."""
        return next((plan for plan in self.plans.values() if self.mailbox(plan, extension)), None)


class LiveDirectory:
    """A CallDirectory that follows its source (a SIGHUP's new config) and the directory file's changes.

    A directory file that cannot be read keeps the directory of the keys alone, and says so once
    per change of the file.
    """

    def __init__(self, source: Callable[[], DirectorySource], on_error: Callable[[str], None] | None = None) -> None:
        self._source = source
        self._on_error = on_error
        self._seen: tuple[int, float] | None = None
        self._current: CallDirectory | None = None

    def current(self) -> CallDirectory:
        source = self._source()
        path = source.directory_file
        try:
            mtime = Path(path).stat().st_mtime if path else 0.0
        except OSError:
            mtime = -1.0
        key = (id(source), mtime)
        if self._current is None or key != self._seen:
            try:
                directory = load_directory(source)
            except (OSError, ValueError) as error:  # DirectoryError and TOML errors are ValueErrors
                if self._on_error is not None:
                    self._on_error(f"directory file not loaded: {error}")
                directory = assemble(source.dial_plans, source.mailboxes, source.mailbox_servers)
            self._current, self._seen = CallDirectory(directory, source.hunt_groups,
                                                      tuple(getattr(source, "auto_attendants", ()))), key
        return self._current

    @property
    def plans(self) -> dict[str, DialPlan]:
        return self.current().plans

    def plan_for(self, pilot: str | None) -> DialPlan | None:
        return self.current().plan_for(pilot)

    def mailbox(self, plan: DialPlan | None, user: str | None, host: str | None = None) -> str | None:
        return self.current().mailbox(plan, user, host)

    def known(self, extension: str) -> bool:
        return self.current().known(extension)

    def plan_of(self, extension: str) -> DialPlan | None:
        return self.current().plan_of(extension)

    def attendant(self, number: str | None) -> Any:
        return self.current().attendant(number)
