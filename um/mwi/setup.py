"""[mwi] into an MwiService plugged into the UM service (um.mailbox's `events` hook)."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from pathlib import Path

from um.config import UmSections
from um.directory import LOCAL, CallDirectory
from um.mailbox import MailboxService
from um.mwi.service import MwiService
from um.mwi.subscriptions import DigestGate, SubscriptionTable
from um.sip.uac import UserAgentClient
from um.worker.store import MAILBOX_PATTERN, VoicemailStore

Target = tuple[str, int, str]


def _passwords(path: str) -> Callable[[str], str | None]:
    """passwords_file: "EXTENSION:PASSWORD" lines, read again when the file changes."""
    seen: list[float] = [-1.0]
    table: dict[str, str] = {}

    def lookup(extension: str) -> str | None:
        if not path:
            return None
        try:
            mtime = Path(path).stat().st_mtime
            if mtime != seen[0]:
                table.clear()
                for line in Path(path).read_text().splitlines():
                    name, sep, secret = line.strip().partition(":")
                    if sep and name and not name.startswith("#"):
                        table[name] = secret
                seen[0] = mtime
        except OSError:
            return None
        return table.get(extension)

    return lookup


def mwi_service(sections: UmSections, mailbox: MailboxService, directory: Callable[[], CallDirectory],
                host: str, ssl_context: Callable[[], ssl.SSLContext] | None = None) -> MwiService | None:
    m, node = sections.mwi, sections.node
    if not m.enabled:
        return None
    store = VoicemailStore(node.state_dir)

    def mailbox_of(user: str | None) -> str | None:
        if not user:
            return None
        number = user.split(";", 1)[0]
        current = directory()
        for plan in current.plans.values():
            found = current.mailbox(plan, number)
            if found is not None:
                return found
        return None

    cached: dict[str, tuple[object, set[str]]] = {}

    def local_mailboxes(plan: str) -> set[str]:
        """This node's mailboxes of a dial plan; computed once per directory (it changes on reloads only)."""
        current = directory().directory
        hit = cached.get(plan)
        if hit is None or hit[0] is not current:
            hit = cached[plan] = (current, {e.extension for e in current.mailboxes if e.server == LOCAL and (
                not plan or not e.dial_plan or e.dial_plan == plan)})
        return hit[1]

    def targets() -> list[tuple[Target, list[str]]]:
        """Each notify target and the mailboxes it hears about: those of its plan with a folder in the store."""
        if not m.notify_targets:
            return []
        try:
            folders = {p.name for p in store.root.iterdir() if MAILBOX_PATTERN.match(p.name)}
        except OSError:
            folders = set()
        return [((host_, port, transport), sorted(folders & local_mailboxes(plan)))
                for plan, host_, port, transport in m.notify_targets]

    port = sections.mailbox.sip_tcp_port
    contact = f"sip:voicemail@{host}:{port};transport=tcp"
    table = SubscriptionTable(node.domain, contact, min_expires=m.min_expires, max_expires=m.max_expires,
                              limit=m.max_subscriptions)
    gate = DigestGate(m.digest_realm, _passwords(m.passwords_file)) if m.digest_realm else None
    client = UserAgentClient(via_host=host, ssl_context=ssl_context)
    service = MwiService(store, table, client, mailbox_of=mailbox_of, trusted=mailbox.trusts_caller, gate=gate,
                         refused=mailbox.count_untrusted, targets=targets)
    mailbox.events = service
    return service


__all__ = ["mwi_service"]
