"""[delivery] into a DeliveryService, and the checks `check-config` and start-up share."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from um.config import DeliveryConfig, UmSections
from um.delivery.imapsync import ImapAccess
from um.delivery.message import Sender
from um.delivery.service import DeliveryService, Policy, Recipient
from um.delivery.transport import Server
from um.directory import LOCAL, CallDirectory
from um.worker.store import VoicemailStore

DEFAULT_PORTS = {"smtp": 25, "lmtp": 24}


class DeliverySetupError(ValueError):
    """A [delivery] key that cannot be used as given; the message names it."""


def read_secret(path: str, key: str) -> str:
    if not path:
        return ""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as error:
        raise DeliverySetupError(f"[delivery].{key}: cannot read {path}: {error.strerror}") from None
    if not lines or not lines[0].strip():
        raise DeliverySetupError(f"[delivery].{key}: {path} is empty; allowed: the password on its first line")
    return lines[0].strip()


def server(d: DeliveryConfig, domain: str) -> Server:
    return Server(d.mode, d.host, d.port or DEFAULT_PORTS.get(d.mode, 25), d.starttls, d.username,
                  read_secret(d.password_file, "password_file"), d.ca_file, d.timeout, helo=domain)


def recipients(directory: Callable[[], CallDirectory]) -> Callable[[str], Recipient | None]:
    """Mailbox extension -> its email and language (its dial plan's), from the live directory."""

    def lookup(mailbox: str) -> Recipient | None:
        current = directory().directory
        plans = current.dial_plans
        for entry in current.mailboxes:
            if entry.extension == mailbox and entry.server == LOCAL:
                plan = plans.get(entry.dial_plan) if entry.dial_plan else (
                    next(iter(plans.values())) if len(plans) == 1 else None)
                return Recipient(entry.email, plan.language if plan is not None else "en")
        return None

    return lookup


def warnings(sections: UmSections, directory: CallDirectory) -> list[str]:
    """What an operator should know (start-up log and check-config): mailboxes that get no email."""
    if sections.delivery.mode == "off":
        return []
    missing = [m.extension for m in directory.directory.mailboxes if m.server == LOCAL and not m.email]
    if not missing:
        return []
    shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
    return [f"[delivery] mode = \"{sections.delivery.mode}\" but {len(missing)} local mailbox(es) have no email "
            f"key ({shown}): their voicemails are not mailed (only played by phone)"]


def problems(sections: UmSections) -> list[tuple[str, str]]:
    """([delivery].key, what is wrong and allowed) for every key that cannot be used: config load fails on them."""
    d = sections.delivery
    if d.mode == "off":
        return []
    found = []
    for key, path in (("password_file", d.password_file), ("imap_master_password_file", d.imap_master_password_file)):
        try:
            read_secret(path, key)
        except DeliverySetupError as error:
            found.append((f"[delivery].{key}", str(error).split(": ", 1)[1]))
    if d.username and not d.password_file:
        found.append(("[delivery].password_file", "needed with username; allowed: a file with the password on "
                      "its first line"))
    if d.username and d.starttls == "off":
        found.append(("[delivery].username", 'AUTH is only sent over TLS; allowed: starttls = "required" or '
                      '"opportunistic" with a username, or username = ""'))
    if d.imap_host and not (d.imap_master_user and d.imap_master_password_file):
        found.append(("[delivery].imap_master_user", "needed (with imap_master_password_file) when imap_host is "
                      "set; allowed: the mail store's master user"))
    return found


def delivery_service(sections: UmSections, directory: Callable[[], CallDirectory]) -> DeliveryService | None:
    """The service, or None when [delivery] mode is "off" (queued messages then wait in the outbox)."""
    d, node = sections.delivery, sections.node
    store = VoicemailStore(node.state_dir)
    if d.mode == "off":
        from um.delivery.outbox import Outbox

        Outbox(store).disable()
        return None
    if d.username and d.starttls == "off":
        raise DeliverySetupError('[delivery].username: AUTH is only sent over TLS; allowed: starttls = "required" '
                                 'or "opportunistic" with a username, or username = ""')
    imap = None
    if d.imap_host:
        if not d.imap_master_user:
            raise DeliverySetupError("[delivery].imap_master_user: needed with imap_host; allowed: the mail "
                                     "store's master user")
        imap = ImapAccess(d.imap_host, d.imap_port, d.imap_master_user,
                          read_secret(d.imap_master_password_file, "imap_master_password_file"),
                          d.imap_starttls == "required", d.ca_file, d.timeout)
    sender = Sender(d.from_address, d.from_name, node.fqdn)
    policy = Policy(d.retry_for_hours * 3600.0, d.retry_initial_seconds, max(d.retry_initial_seconds,
                    d.retry_max_seconds), int(d.max_message_mb * 1024 * 1024), d.audio_format, d.timeout)
    return DeliveryService(store, server(d, node.fqdn), sender, policy, recipients(directory), imap,
                           d.imap_poll_seconds)


__all__ = ["DeliverySetupError", "delivery_service", "recipients", "server", "warnings"]
