"""Voicemail PINs: the PIN policy, salted scrypt hashes, failure counting and lockout.

One JSON per mailbox (voicemail/<mailbox>/pin.json), written atomically:
the salt and scrypt hash of the PIN (never the PIN), consecutive failures,
and whether the mailbox is locked. After `max_failures` wrong PINs in a row
the mailbox locks until an administrator resets the PIN (`umedge voicemail
pin-reset`, or POST /v1/pin-reset). Hashing is slow on purpose (scrypt, ~16
MiB): callers on an event loop run `verify` in a thread.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import hmac
import json
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from um.worker.store import atomic_write, check_mailbox

SCRYPT = {"n": 2**14, "r": 8, "p": 1}


class PinPolicyError(ValueError):
    """A PIN the policy refuses (the message says why)."""


@dataclass(frozen=True)
class PinPolicy:
    min_length: int = 6
    max_length: int = 24
    max_failures: int = 5

    def check(self, pin: str) -> str:
        if not isinstance(pin, str) or not pin.isdigit() or not pin.isascii():
            raise PinPolicyError("a PIN is digits only")
        if not self.min_length <= len(pin) <= self.max_length:
            raise PinPolicyError(f"a PIN has {self.min_length}-{self.max_length} digits")
        if len(set(pin)) == 1:
            raise PinPolicyError("a PIN cannot repeat one digit")
        steps = {(int(b) - int(a)) % 10 for a, b in zip(pin, pin[1:], strict=False)}
        if steps in ({1}, {9}):
            raise PinPolicyError("a PIN cannot be a run of consecutive digits")
        return pin

    def generate(self) -> str:
        while True:
            pin = "".join(secrets.choice("0123456789") for _ in range(max(self.min_length, 6)))
            try:
                return self.check(pin)
            except PinPolicyError:
                continue


def plan_policy(base: PinPolicy, plan: Any) -> PinPolicy:
    """`base` ([worker]'s policy) with what a dial plan sets (its pin_min_length, pin_max_failures; 0: unset)."""
    if plan is None or not (plan.pin_min_length or plan.pin_max_failures):
        return base
    return PinPolicy(min_length=plan.pin_min_length or base.min_length, max_length=base.max_length,
                     max_failures=plan.pin_max_failures or base.max_failures)


def _hash(pin: str, salt: bytes, params: dict[str, int]) -> bytes:
    return hashlib.scrypt(pin.encode(), salt=salt, n=params["n"], r=params["r"], p=params["p"], dklen=32,
                          maxmem=64 * 1024 * 1024)


class PinStore:
    OK, WRONG, LOCKED, NO_PIN = "ok", "wrong", "locked", "no-pin"

    def __init__(self, state_dir: str | Path, policy: PinPolicy | None = None,
                 policy_of: Callable[[str], PinPolicy] | None = None) -> None:
        """`policy_of(mailbox)`: the mailbox's own policy (its dial plan's); else `policy` for every mailbox."""
        self.root = Path(state_dir) / "voicemail"
        self.policy = policy or PinPolicy()
        self.policy_of = policy_of or (lambda mailbox: self.policy)
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def _path(self, mailbox: str) -> Path:
        return self.root / check_mailbox(mailbox) / "pin.json"

    def _lock(self, mailbox: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(mailbox, threading.Lock())

    @contextmanager
    def _locked(self, mailbox: str) -> Iterator[None]:
        """The mailbox's PIN record to ourselves: across this process's threads and across the worker
        processes sharing the store (flock on pin.lock), so no concurrent failure count is lost."""
        with self._lock(mailbox):
            path = self._path(mailbox).with_name("pin.lock")
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)  # releases the flock

    def _read(self, mailbox: str) -> dict[str, Any] | None:
        try:
            return json.loads(self._path(mailbox).read_text())
        except (OSError, ValueError):
            return None

    def _write(self, mailbox: str, record: dict[str, Any]) -> None:
        atomic_write(self._path(mailbox), json.dumps(record, indent=1).encode(), self.root / ".tmp", mode=0o600)

    def set_pin(self, mailbox: str, pin: str, must_change: bool = False) -> None:
        """Set a PIN (policy checked), clearing failures and any lockout. `must_change`: a generated PIN,
        which the subscriber replaces at the first login (first-time setup)."""
        self.policy_of(mailbox).check(pin)
        salt = secrets.token_bytes(16)
        record = {"algorithm": "scrypt", **SCRYPT, "salt": base64.b64encode(salt).decode(),
                  "hash": base64.b64encode(_hash(pin, salt, SCRYPT)).decode(), "failures": 0, "locked": False,
                  "changed": time.time(), "must_change": must_change}
        with self._locked(mailbox):
            self._write(mailbox, record)

    def reset(self, mailbox: str, pin: str | None = None) -> str:
        """A new PIN (given, or generated by the policy); unlocks the mailbox. Returns the PIN."""
        generated = pin is None
        pin = pin if pin is not None else self.policy_of(mailbox).generate()
        self.set_pin(mailbox, pin, must_change=generated)
        return pin

    def verify(self, mailbox: str, pin: str) -> str:
        """OK, WRONG (counted), LOCKED (too many failures; even a right PIN), or NO_PIN. Blocking."""
        with self._locked(mailbox):
            record = self._read(mailbox)
            if record is None:
                return self.NO_PIN
            if record.get("locked"):
                return self.LOCKED
            salt = base64.b64decode(record["salt"])
            params = {k: int(record[k]) for k in ("n", "r", "p")}
            good = hmac.compare_digest(_hash(pin, salt, params), base64.b64decode(record["hash"]))
            if good:
                if record.get("failures"):
                    record["failures"] = 0
                    self._write(mailbox, record)
                return self.OK
            record["failures"] = int(record.get("failures", 0)) + 1
            if record["failures"] >= self.policy_of(mailbox).max_failures:
                record["locked"] = True
                record["locked_at"] = time.time()
            self._write(mailbox, record)
            return self.LOCKED if record["locked"] else self.WRONG

    def status(self, mailbox: str) -> dict[str, Any]:
        record = self._read(mailbox)
        if record is None:
            return {"mailbox": mailbox, "pin_set": False, "failures": 0, "locked": False}
        return {"mailbox": mailbox, "pin_set": True, "failures": record.get("failures", 0),
                "locked": bool(record.get("locked")), "changed": record.get("changed"),
                "must_change": bool(record.get("must_change"))}
