"""Handing one message to an SMTP or LMTP server with Python's smtplib, and judging the outcome.

smtplib (the standard library's client, kept with Python) speaks both: SMTP
with STARTTLS and AUTH PLAIN/LOGIN, and LMTP (LHLO; one recipient per message
here, so its one per-recipient status after DATA is the answer). twisted.mail
has no LMTP client, and one client for both paths keeps their behaviour the
same. It blocks: the delivery service runs it in a thread.

Every outcome is one of: accepted (2xx after DATA), temporary (4xx, network,
TLS or AUTH trouble: retry later; nothing is lost) or permanent (5xx for the
recipient or the message: dead letter).
"""

from __future__ import annotations

import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY


@dataclass(frozen=True)
class Server:
    mode: str          # "smtp" or "lmtp"
    host: str
    port: int
    starttls: str      # "required", "opportunistic", "off"
    username: str = ""
    password: str = ""
    ca_file: str = ""
    timeout: float = 30.0
    helo: str = "localhost"

    def __repr__(self) -> str:  # never the password
        return f"Server({self.mode}://{self.host}:{self.port}, starttls={self.starttls}, user={self.username!r})"


@dataclass(frozen=True)
class Outcome:
    kind: str          # "accepted", "temporary", "permanent"
    detail: str
    category: str = "" # for metrics and rate-limited logs: "connect", "tls", "auth", "4xx", "5xx", ...


def tls_context(ca_file: str) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=ca_file or None)


def _text(code: int, message: bytes | str) -> str:
    body = message.decode(errors="replace") if isinstance(message, bytes) else str(message)
    return f"{code} {body}".strip()[:300]


def send(server: Server, sender: str, recipient: str, mail: EmailMessage) -> Outcome:
    """One attempt: connect, (STARTTLS, AUTH,) MAIL, RCPT, DATA. Never raises for server or network trouble."""
    data = mail.as_bytes(policy=SMTP_POLICY)
    client: smtplib.SMTP | None = None
    try:
        if server.mode == "lmtp":
            client = smtplib.LMTP(server.host, server.port, local_hostname=server.helo, timeout=server.timeout)
            client.ehlo_or_helo_if_needed()
        else:
            client = smtplib.SMTP(server.host, server.port, local_hostname=server.helo, timeout=server.timeout)
            client.ehlo()
        if server.starttls != "off":
            if client.has_extn("starttls"):
                try:
                    client.starttls(context=tls_context(server.ca_file))
                except ssl.SSLCertVerificationError as error:
                    return Outcome("temporary", f"the server's certificate cannot be verified: "
                                   f"{error.verify_message}", "tls-verify")
                except (ssl.SSLError, OSError) as error:
                    return Outcome("temporary", f"STARTTLS failed: {error}", "tls")
                client.ehlo()
            elif server.starttls == "required":
                return Outcome("temporary", "the server offers no STARTTLS and [delivery] starttls = \"required\"",
                               "tls")
        if server.username:
            if client.sock is None or not isinstance(client.sock, ssl.SSLSocket):
                return Outcome("temporary", "AUTH is only ever sent over TLS; the connection is not encrypted",
                               "tls")
            # One mechanism per attempt (PLAIN, else LOGIN), not smtplib.login's every one in turn: a wrong
            # password costs one failure, not one per mechanism (servers delay and lock out on failures).
            offered = client.esmtp_features.get("auth", "").upper().split()
            mechanism = "PLAIN" if "PLAIN" in offered else "LOGIN" if "LOGIN" in offered else None
            if mechanism is None:
                return Outcome("temporary", "the server offers no AUTH PLAIN or LOGIN", "auth")
            client.user, client.password = server.username, server.password
            answer = client.auth_plain if mechanism == "PLAIN" else client.auth_login
            try:
                client.auth(mechanism, answer)
            except smtplib.SMTPAuthenticationError as error:
                return Outcome("temporary", f"AUTH refused: {_text(error.smtp_code, error.smtp_error)}", "auth")
        refused = client.sendmail(sender, [recipient], data)
        if refused:  # cannot happen with one recipient (sendmail raises), kept for clarity
            code, message = refused[recipient]
            return _judge(code, message)
        return Outcome("accepted", "250", "ok")
    except smtplib.SMTPRecipientsRefused as error:
        code, message = error.recipients.get(recipient, (450, b"refused"))
        return _judge(code, message)
    except smtplib.SMTPResponseException as error:
        return _judge(error.smtp_code, error.smtp_error)
    except smtplib.SMTPSenderRefused as error:
        return _judge(error.smtp_code, error.smtp_error)
    except ssl.SSLCertVerificationError as error:
        return Outcome("temporary", f"the server's certificate cannot be verified: {error.verify_message}",
                       "tls-verify")
    except (TimeoutError, smtplib.SMTPException, OSError) as error:
        return Outcome("temporary", f"cannot deliver to {server.host}:{server.port}: {error or type(error).__name__}",
                       "connect")
    finally:
        if client is not None:
            try:
                client.quit()
            except (smtplib.SMTPException, OSError):
                client.close()


def _judge(code: int, message: bytes | str) -> Outcome:
    text = _text(code, message)
    if 500 <= code < 600:
        return Outcome("permanent", text, "5xx")
    if 200 <= code < 300:
        return Outcome("accepted", text, "ok")
    return Outcome("temporary", text, "4xx")


__all__ = ["Outcome", "Server", "send", "tls_context"]
