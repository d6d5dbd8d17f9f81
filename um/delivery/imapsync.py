"""Read state follows the mailbox: the delivered voicemails' \\Seen flags and the store's read flags, both ways.

Blocking (imaplib); the delivery service runs `run_once` in a thread every
`[delivery] imap_poll_seconds`. For each mailbox with delivered voicemails
it logs in as "<email>*<master user>" (Dovecot's master-user login), finds
the messages by their X-Umedge-Voicemail-Id header and compares each one's
\\Seen with the store's read flag and with what both were at the last sync
(kept in the sent record): whichever side changed since wins, a read on
either side wins over an unread. A voicemail that was seen in the mailbox
and is gone from it (expunged, or flagged \\Deleted) was deleted in the mail
client: it is deleted from the store too, so the phone no longer offers it.
"""

from __future__ import annotations

import imaplib
import json
import re
import ssl
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from um.delivery.message import HEADER_ID
from um.delivery.outbox import Outbox
from um.worker.store import ID_PATTERN, StoreError, VoicemailStore, atomic_write

_FETCH_ID = re.compile(rb"X-Umedge-Voicemail-Id:\s*([0-9]{8}T[0-9]{6}Z-[0-9a-f]{8})", re.I)
_FLAGS = re.compile(rb"FLAGS \(([^)]*)\)")
_UID = re.compile(rb"UID ([0-9]+)")


@dataclass(frozen=True)
class ImapAccess:
    host: str
    port: int
    master_user: str
    master_password: str
    starttls: bool = True
    ca_file: str = ""
    timeout: float = 30.0

    def __repr__(self) -> str:  # never the password
        return f"ImapAccess({self.host}:{self.port}, master={self.master_user!r}, starttls={self.starttls})"


class ImapError(Exception):
    pass


class ImapSync:
    def __init__(self, store: VoicemailStore, outbox: Outbox, access: ImapAccess,
                 counters: Counter[str] | None = None) -> None:
        self.store, self.outbox, self.access = store, outbox, access
        self.counters: Counter[str] = counters if counters is not None else Counter()
        self.last_run = 0.0
        self.last_error = ""

    # --- one IMAP session ----------------------------------------------------------------------
    def _login(self, email: str) -> imaplib.IMAP4:
        a = self.access
        try:
            client = imaplib.IMAP4(a.host, a.port, timeout=a.timeout)
        except (OSError, imaplib.IMAP4.error) as error:
            raise ImapError(f"cannot reach {a.host}:{a.port}: {error}") from error
        try:
            if a.starttls:
                client.starttls(ssl_context=ssl.create_default_context(cafile=a.ca_file or None))
            client.login(f"{email}*{a.master_user}", a.master_password)
        except (OSError, imaplib.IMAP4.error, ssl.SSLError) as error:
            try:
                client.shutdown()
            except OSError:
                pass
            raise ImapError(f"login for {email} as master user {a.master_user!r} failed: {error}") from error
        return client

    @staticmethod
    def _inbox(client: imaplib.IMAP4) -> dict[str, tuple[bytes, set[str]]]:
        """voicemail id -> (UID, flags) of every voicemail in INBOX."""
        status, _ = client.select("INBOX")
        if status != "OK":
            raise ImapError("cannot select INBOX")
        status, data = client.uid("SEARCH", "HEADER", HEADER_ID, '""')  # imaplib sends arguments as given
        if status != "OK" or not data or not data[0]:
            return {}
        uids = data[0].split()
        found: dict[str, tuple[bytes, set[str]]] = {}
        for start in range(0, len(uids), 200):
            chunk = b",".join(uids[start:start + 200]).decode()
            status, rows = client.uid("FETCH", chunk, f"(UID FLAGS BODY.PEEK[HEADER.FIELDS ({HEADER_ID})])")
            if status != "OK":
                raise ImapError("FETCH failed")
            for row in rows:
                if not isinstance(row, tuple):
                    continue
                meta, header = row[0], row[1]
                match, flags, uid = _FETCH_ID.search(header), _FLAGS.search(meta), _UID.search(meta)
                if match and uid:
                    found[match.group(1).decode()] = (uid.group(1), set(
                        flags.group(1).decode().split()) if flags else set())
        return found

    def contains(self, email: str, voicemail_id: str) -> bool:
        """Whether the mailbox holds the voicemail already (an interrupted attempt that went through)."""
        try:
            client = self._login(email)
        except ImapError:
            return False
        try:
            return voicemail_id in self._inbox(client)
        except (OSError, imaplib.IMAP4.error, ImapError):
            return False
        finally:
            _logout(client)

    # --- the sync ------------------------------------------------------------------------------
    def run_once(self) -> str:
        """One pass over every mailbox with delivered voicemails. Returns "" or what went wrong."""
        by_email: dict[str, list[dict[str, Any]]] = {}
        for record in self.outbox.sent():
            by_email.setdefault(str(record.get("email", "")), []).append(record)
        problems = []
        for email, records in by_email.items():
            if not email:
                continue
            try:
                self._sync(email, records)
            except (TimeoutError, ImapError, OSError, imaplib.IMAP4.error) as error:
                self.counters["imap_errors"] += 1
                problems.append(str(error))
        self.last_run = time.time()
        self.last_error = "; ".join(problems)[:500]
        return self.last_error

    def _sync(self, email: str, records: list[dict[str, Any]]) -> None:
        client = self._login(email)
        try:
            inbox = self._inbox(client)
            for record in records:
                self._one(client, record, inbox.get(str(record["id"])))
        finally:
            _logout(client)

    def _one(self, client: imaplib.IMAP4, record: dict[str, Any], found: tuple[bytes, set[str]] | None) -> None:
        voicemail_id, mailbox = str(record["id"]), str(record["mailbox"])
        if not ID_PATTERN.match(voicemail_id):
            return
        try:
            local = self.store.find(voicemail_id)
        except StoreError:
            self.outbox.forget_sent(voicemail_id)  # deleted on the phone: nothing left to follow
            return
        if found is None or "\\Deleted" in found[1]:
            if record.get("seen_in_imap"):  # it was there: deleted in the mail client
                self.store.delete(local)
                self.outbox.forget_sent(voicemail_id)
                self.counters["imap_deleted"] += 1
            return  # not there yet (an MTA still holds it)
        uid, flags = found
        seen = "\\Seen" in flags
        last = bool(record.get("synced_read", False))
        read = local.read
        if seen != last and read == last:
            self.store.set_read(mailbox, voicemail_id, seen)
            self.counters["imap_read_in_client"] += 1
            result = seen
        elif read != last and seen == last:
            client.uid("STORE", uid.decode(), "+FLAGS" if read else "-FLAGS", "(\\Seen)")
            self.counters["imap_flagged"] += 1
            result = read
        elif read != seen:  # both changed: a read anywhere wins
            if not read:
                self.store.set_read(mailbox, voicemail_id, True)
            if not seen:
                client.uid("STORE", uid.decode(), "+FLAGS", "(\\Seen)")
            result = True
        else:
            result = read
        if record.get("synced_read") != result or not record.get("seen_in_imap"):
            record.update(synced_read=result, seen_in_imap=True)
            atomic_write(self.outbox.sent_dir / f"{voicemail_id}.json", json.dumps(record).encode())

    def status(self) -> dict[str, Any]:
        return {"last_run": self.last_run, "last_error": self.last_error, "server": f"{self.access.host}:"
                f"{self.access.port}"}


def _logout(client: imaplib.IMAP4) -> None:
    try:
        client.logout()
    except (OSError, imaplib.IMAP4.error):
        pass


__all__ = ["ImapAccess", "ImapError", "ImapSync"]
