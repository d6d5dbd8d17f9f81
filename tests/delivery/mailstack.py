"""A real mail stack on loopback for the delivery tests: Dovecot (IMAP + LMTP + SASL) and Postfix in front of it.

Dovecot runs with its own config, base_dir and Maildirs under a temp dir in
/tmp (its mail processes run as the `dovecot` user, so the path must be
traversable: pytest's own tmp dirs are not), a master user for umedge's
IMAP sync, and users from a passwd-file (an unknown one gets 550 on LMTP).
Postfix is a separate instance (`postfix -c DIR`: its own main.cf/master.cf,
queue and log) on a free port with STARTTLS required and AUTH checked by
Dovecot's SASL, relaying example.test to Dovecot's LMTP.

OpenSMTPD (the issue's first suggestion) cannot do STARTTLS on this Debian:
6.8.0p2 with OpenSSL 3 fails every handshake ("EVP lib",
OpenSMTPD/OpenSMTPD#1171); Postfix is the MTA the issue allows instead.
"""

from __future__ import annotations

import email
import grp
import imaplib
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from email.message import Message
from pathlib import Path

from tests.conftest import REQUIRE_TOOLS
from tests.support import free_port

DOMAIN = "example.test"
MASTER_USER, MASTER_PASSWORD = "umedge", "master-secret"
RELAY_USER, RELAY_PASSWORD = "relay@example.test", "relay-secret"


def dovecot_available() -> bool:
    return shutil.which("dovecot") is not None and Path("/usr/lib/dovecot/lmtp").exists()


def postfix_available() -> bool:
    return shutil.which("postfix") is not None and os.geteuid() == 0


def skip_reason(*need: str) -> str | None:
    """None when the tools are there (or REQUIRE_TOOLS: then the test fails on its own)."""
    missing = [n for n in need if not {"dovecot": dovecot_available, "postfix": postfix_available}[n]()]
    if missing and not REQUIRE_TOOLS:
        return f"{', '.join(missing)} missing (Debian dovecot-imapd dovecot-lmtpd / postfix)"
    return None


def _wait_port(port: int, timeout: float = 10.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


class Dovecot:
    def __init__(self, users: tuple[str, ...] = ("1001", "1002", "1003")) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="umedge-dovecot-"))
        os.chmod(self.root, 0o755)
        self.imap_port, self.lmtp_port, self.auth_port = free_port(), free_port(), free_port()
        self.users = users
        self.proc: subprocess.Popen[bytes] | None = None
        self.master_password_file = self.root / "master-password"
        self.master_password_file.write_text(MASTER_PASSWORD + "\n")

    def address(self, user: str) -> str:
        return f"{user}@{DOMAIN}"

    def start(self) -> Dovecot:
        root = self.root
        mail = root / "mail"
        mail.mkdir()
        uid, gid = pwd.getpwnam("dovecot").pw_uid, grp.getgrnam("dovecot").gr_gid
        os.chown(mail, uid, gid)
        (root / "users").write_text("".join(f"{self.address(u)}:{{PLAIN}}pw-{u}::::::\n" for u in self.users)
                                    + f"{RELAY_USER}:{{PLAIN}}{RELAY_PASSWORD}::::::\n")
        (root / "masters").write_text(f"{MASTER_USER}:{{PLAIN}}{MASTER_PASSWORD}\n")
        (root / "dovecot.conf").write_text(f"""
base_dir = {root}/run
state_dir = {root}/state
instance_name = umedge-test-{self.imap_port}
log_path = {root}/dovecot.log
protocols = imap lmtp
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_master_user_separator = *
auth_failure_delay = 0
first_valid_uid = 100
mail_location = maildir:~/Maildir
default_internal_user = dovecot
default_login_user = dovenull
passdb {{
  driver = passwd-file
  args = {root}/masters
  master = yes
}}
passdb {{
  driver = passwd-file
  args = {root}/users
}}
userdb {{
  driver = passwd-file
  args = {root}/users
  default_fields = uid=dovecot gid=dovecot home={mail}/%n
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.imap_port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {self.lmtp_port}
  }}
}}
service auth {{
  inet_listener auth {{
    address = 127.0.0.1
    port = {self.auth_port}
  }}
}}
""")
        self.proc = subprocess.Popen(["dovecot", "-F", "-c", str(root / "dovecot.conf")], stdout=subprocess.DEVNULL,
                                     stderr=open(root / "stderr.log", "wb"))
        for port in (self.imap_port, self.lmtp_port, self.auth_port):
            _wait_port(port)
        return self

    def log(self) -> str:
        try:
            return (self.root / "dovecot.log").read_text()[-4000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)

    # --- reading the store back, as a mail client would -------------------------------------------
    def imap(self, user: str) -> imaplib.IMAP4:
        client = imaplib.IMAP4("127.0.0.1", self.imap_port, timeout=10)
        client.login(f"{self.address(user)}*{MASTER_USER}", MASTER_PASSWORD)
        client.select("INBOX")
        return client

    def messages(self, user: str) -> list[tuple[bytes, set[str], Message]]:
        """(UID, flags, parsed message) of every message in the user's INBOX; peeks (leaves \\Seen alone)."""
        client = self.imap(user)
        try:
            _, data = client.uid("SEARCH", "ALL")
            found = []
            for uid in data[0].split():
                _, rows = client.uid("FETCH", uid.decode(), "(FLAGS BODY.PEEK[])")
                for row in rows:
                    if isinstance(row, tuple):
                        flags = row[0].decode()
                        flag_text = flags.split("FLAGS (", 1)[1].split(")", 1)[0] if "FLAGS (" in flags else ""
                        found.append((uid, set(flag_text.split()), email.message_from_bytes(row[1])))
            return found
        finally:
            client.logout()

    def wait_messages(self, user: str, count: int, timeout: float) -> list[tuple[bytes, set[str], Message]]:
        deadline = time.monotonic() + timeout
        found = self.messages(user)
        while len(found) < count and time.monotonic() < deadline:
            time.sleep(0.2)
            found = self.messages(user)
        return found

    def set_seen(self, user: str, uid: bytes, seen: bool = True) -> None:
        client = self.imap(user)
        try:
            client.uid("STORE", uid.decode(), "+FLAGS" if seen else "-FLAGS", "(\\Seen)")
        finally:
            client.logout()

    def expunge(self, user: str, uid: bytes) -> None:
        client = self.imap(user)
        try:
            client.uid("STORE", uid.decode(), "+FLAGS", "(\\Deleted)")
            client.expunge()
        finally:
            client.logout()


class Postfix:
    """A Postfix instance: STARTTLS required, AUTH via Dovecot SASL, example.test relayed to Dovecot's LMTP."""

    def __init__(self, dovecot: Dovecot) -> None:
        self.dovecot = dovecot
        self.root = Path(tempfile.mkdtemp(prefix="umedge-postfix-"))
        os.chmod(self.root, 0o755)
        self.port = free_port()
        self.conf, self.queue, self.data = self.root / "etc", self.root / "queue", self.root / "data"
        self.ca_file = self.root / "etc" / "cert.pem"

    def _postfix(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(["postfix", "-c", str(self.conf), *args], capture_output=True, text=True, timeout=30)
        if check and result.returncode != 0:
            raise AssertionError(f"postfix {' '.join(args)}: {result.stderr}{result.stdout}")
        return result

    def setup(self) -> Postfix:
        for folder in (self.conf, self.queue, self.data):
            folder.mkdir()
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                        "-keyout", str(self.conf / "key.pem"), "-out", str(self.ca_file), "-days", "2",
                        "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                       check=True, capture_output=True, timeout=30)
        os.chmod(self.conf / "key.pem", 0o600)
        postfix_user = pwd.getpwnam("postfix")
        os.chown(self.data, postfix_user.pw_uid, postfix_user.pw_gid)
        d = self.dovecot
        (self.conf / "main.cf").write_text(f"""
compatibility_level = 3.6
queue_directory = {self.queue}
data_directory = {self.data}
mail_owner = postfix
myhostname = mta.umedge.test
mydomain = umedge.test
myorigin = umedge.test
mydestination =
local_recipient_maps =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
maillog_file = {self.root}/maillog
maillog_file_prefixes = {self.root}
smtpd_banner = $myhostname ESMTP
smtpd_error_sleep_time = 0s
smtpd_tls_cert_file = {self.ca_file}
smtpd_tls_key_file = {self.conf}/key.pem
smtpd_tls_security_level = encrypt
smtpd_tls_auth_only = yes
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = dovecot
smtpd_sasl_path = inet:127.0.0.1:{d.auth_port}
smtpd_relay_restrictions = permit_sasl_authenticated, reject
smtpd_recipient_restrictions = permit_sasl_authenticated, reject
virtual_mailbox_domains = {DOMAIN}
virtual_mailbox_maps = inline:{{ {", ".join(f"{d.address(u)}=ok" for u in d.users)} }}
virtual_transport = lmtp:inet:127.0.0.1:{d.lmtp_port}
alias_maps =
alias_database =
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
disable_dns_lookups = yes
smtp_host_lookup = native
lmtp_host_lookup = native
""")
        (self.conf / "master.cf").write_text(f"""
127.0.0.1:{self.port} inet n - n - - smtpd
pickup    unix n - n 60 1 pickup
cleanup   unix n - n - 0 cleanup
qmgr      unix n - n 300 1 qmgr
tlsmgr    unix - - n 1000? 1 tlsmgr
rewrite   unix - - n - - trivial-rewrite
bounce    unix - - n - 0 bounce
defer     unix - - n - 0 bounce
trace     unix - - n - 0 bounce
verify    unix - - n - 1 verify
flush     unix n - n 1000? 0 flush
proxymap  unix - - n - - proxymap
smtp      unix - - n - - smtp
relay     unix - - n - - smtp
showq     unix n - n - - showq
error     unix - - n - - error
retry     unix - - n - - error
discard   unix - - n - - discard
lmtp      unix - - n - - lmtp
anvil     unix - - n - 1 anvil
scache    unix - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
""")
        self._postfix("check")
        return self

    def start(self) -> None:
        self._postfix("start")
        _wait_port(self.port)

    def stop(self) -> None:
        self._postfix("stop", check=False)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self._postfix("status", check=False).returncode != 0:
                return
            time.sleep(0.1)

    def flush(self) -> None:
        self._postfix("flush", check=False)

    def log(self) -> str:
        try:
            return (self.root / "maillog").read_text()[-4000:]
        except OSError:
            return ""

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
