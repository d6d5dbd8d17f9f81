"""What a caller can do by phone, in spoken prompts: leave a message, or manage a mailbox (Outlook Voice Access).

The scripts run over `MenuIO` (play, collect digits, record, capture audio,
check a PIN, hang up), which um.worker.call implements; they know nothing of
SIP or sockets. Every menu is one `choose()`: the prompt (the caller may type
ahead), one key, and after three failures (no key, or a key with no action:
"That's not a valid choice") goodbye and hang up.

Subscriber access: the extension (unless the caller ID is one), the PIN, and
first-time setup for a mailbox without a PIN (only from its own phone) or with
a PIN an administrator generated: choose a PIN the dial plan's policy accepts,
record the personal greeting. Then new messages play at once, each followed by
the message menu (1 replay, 2 next, 3 details, 7 delete, 8 undo, 9 save, *
main menu; # skips to the next too); the main menu offers new and saved messages, the greetings
(personal, away, away off) and a PIN change. A message is heard (read) once it
played to the end; deleting takes effect when the call ends, so 8 undoes any
delete until then.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from um.worker import speech, wav
from um.worker.pins import PinPolicy, PinPolicyError
from um.worker.prompts import Prompts
from um.worker.store import Message, atomic_write

MENU_TIMEOUT = 5.0      # seconds for a menu key
DIGIT_TIMEOUT = 8.0     # seconds between the digits of a PIN or an extension
MAX_FAILURES = 3
GREETING_SECONDS = 60.0


class MenuIO(Protocol):
    codec: str
    ended: bool

    async def play(self, audio: bytes, barge_in: bool = False) -> bool: ...
    async def collect(self, max_digits: int, timeout: float, terminator: str = "#") -> str | None: ...
    async def record(self, mailbox: str) -> tuple[Message | None, str]: ...
    async def capture(self, max_seconds: float) -> bytes | None: ...
    async def verify_pin(self, mailbox: str, pin: str) -> str: ...
    async def hangup(self) -> None: ...
    def log(self, text: str, **fields: Any) -> None: ...


class Speaker:
    """Says catalogue sentences in one language and codec."""

    def __init__(self, io: MenuIO, prompts: Prompts, lang: str) -> None:
        self.io, self.prompts, self.lang = io, prompts, lang

    async def audio(self, name: str, **slots: Any) -> bytes:
        """A sentence's audio; in a thread, since a clip not rendered yet runs espeak-ng."""
        return await asyncio.get_event_loop().run_in_executor(
            None, lambda: self.prompts.say(name, self.lang, self.io.codec, **slots))

    async def say(self, name: str, barge_in: bool = False, **slots: Any) -> bool:
        return await self.io.play(await self.audio(name, **slots), barge_in=barge_in)

    async def clips(self, clips: list[speech.Clip], tone: str = "menu", barge_in: bool = False) -> bool:
        audio = await asyncio.get_event_loop().run_in_executor(
            None, self.prompts.sentences, clips, self.lang, self.io.codec, tone)
        return await self.io.play(audio, barge_in=barge_in)

    async def goodbye(self) -> None:
        if not self.io.ended:
            await self.say("goodbye")
            await self.io.hangup()


async def choose(speaker: Speaker, prompt: bytes, keys: str, timeout: float = MENU_TIMEOUT) -> str | None:
    """A menu: one of `keys`, or None once the caller failed three times (then it said goodbye and hung up)."""
    io = speaker.io
    for _ in range(MAX_FAILURES):
        if io.ended:
            return None
        await io.play(prompt, barge_in=True)
        if io.ended:
            return None
        key = await io.collect(1, timeout)
        if key is None:
            return None
        if key and key in keys:
            return key
        if key:
            io.log("menu: key {key!r} has no action", key=key)
            await speaker.say("menu.invalid")
    await speaker.goodbye()
    return None


# --- call answering -------------------------------------------------------------------------------
async def take_message(io: MenuIO, mailbox: str, prompts: Prompts, lang: str) -> Message | None:
    """The mailbox's away or personal greeting, else the spoken default; the tone; record; thank; hang up."""
    greeting = await asyncio.get_event_loop().run_in_executor(None, prompts.greeting, mailbox, io.codec, lang)
    await io.play(greeting, barge_in=True)
    if io.ended:
        return None
    await io.play(prompts.get("beep", io.codec))
    if io.ended:
        return None
    message, reason = await io.record(mailbox)
    io.log("voicemail for {mailbox}: {outcome} ({reason})", mailbox=mailbox, reason=reason,
           outcome=f"message {message.id}, {message.duration:.2f}s" if message else "no message")
    if not io.ended:
        speaker = Speaker(io, prompts, lang)
        if message is not None:
            await speaker.say("message.stored")
        await speaker.goodbye()
    return message


# --- subscriber access ----------------------------------------------------------------------------
@dataclass
class Mailbox:
    """What the subscriber menu may read and change (the worker context's store, PINs and greetings)."""

    messages: Callable[[str], list[Message]]
    audio: Callable[[Message, str], bytes]
    mark_read: Callable[[Message], Any]
    delete: Callable[[Message], Any]
    pin_status: Callable[[str], dict[str, Any]]
    set_pin: Callable[[str, str], Any]
    known: Callable[[str], bool]
    policy_of: Callable[[str], PinPolicy] = lambda mailbox: PinPolicy()  # the mailbox's dial plan's policy
    zone: Any = None  # time zone of the envelope's date and time


class Session:
    """One subscriber's call: login, setup, messages, greetings, PIN."""

    def __init__(self, io: MenuIO, prompts: Prompts, lang: str, box: Mailbox, caller: str) -> None:
        self.io, self.prompts, self.box, self.caller = io, prompts, box, caller
        self.speak = Speaker(io, prompts, lang)
        self.mailbox = ""
        self.deleted: list[Message] = []  # deleted on this call: gone at hang-up, until then 8 undoes

    # --- login ---------------------------------------------------------------------------------
    async def login(self, mailbox: str | None) -> str:
        """"ok", "setup", or how it failed ("locked", "no-pin", "failed", "hangup")."""
        io, speak = self.io, self.speak
        failures = 0
        while mailbox is None:
            if io.ended or failures >= MAX_FAILURES:
                await speak.goodbye()
                return "hangup" if io.ended else "failed"
            await speak.say("extension.enter", barge_in=True)
            extension = await io.collect(20, DIGIT_TIMEOUT)
            if extension is None:
                return "hangup"
            if extension and self.box.known(extension):
                mailbox = extension
                break
            failures += 1
            io.log("subscriber access: unknown extension {extension!r}", extension=extension)
            await speak.say("extension.unknown")
        self.mailbox = mailbox
        status = self.box.pin_status(mailbox)
        if not status.get("pin_set"):
            if self.caller == mailbox:  # the mailbox's own phone (gateway-asserted caller ID) may set it up
                io.log("subscriber access: {mailbox} has no PIN: first-time setup", mailbox=mailbox)
                return "setup"
            io.log("subscriber access: PIN for {mailbox}: no-pin", mailbox=mailbox)
            await speak.say("pin.none")
            await speak.goodbye()
            return "no-pin"
        attempts = 0
        while attempts < self.box.policy_of(mailbox).max_failures:
            if io.ended:
                return "hangup"
            await speak.say("pin.enter", barge_in=True)
            pin = await io.collect(24, DIGIT_TIMEOUT)
            if pin is None:
                return "hangup"
            result = await io.verify_pin(mailbox, pin)
            io.log("subscriber access: PIN for {mailbox}: {result}", mailbox=mailbox, result=result)
            if result == "ok":
                return "setup" if self.box.pin_status(mailbox).get("must_change") else "ok"
            if result in ("locked", "no-pin"):
                await speak.say("pin.locked" if result == "locked" else "pin.none")
                await speak.goodbye()
                return result
            attempts += 1
            await speak.say("pin.wrong")
        await speak.goodbye()
        return "hangup" if io.ended else "failed"

    async def run(self, mailbox: str | None) -> str:
        try:
            outcome = await self.login(mailbox)
            if outcome == "setup":
                await self.speak.say("setup.welcome")
                if not await self.change_pin():
                    await self.speak.goodbye()
                    return "setup-failed"
                await self.speak.say("setup.greeting")
                await self.record_greeting(away=False)
                outcome = "ok"
            if outcome != "ok":
                return outcome
            new = self.unheard()
            self.io.log("subscriber access: {mailbox} logged in, {n} new message(s)", mailbox=self.mailbox,
                        n=len(new))
            await self.speak.clips(speech.count("new", len(new), self.speak.lang), tone="count-pip",
                                   barge_in=True)
            if new and not await self.play_messages(new):
                return "hangup"
            await self.main_menu()
            return "done"
        finally:
            self.commit_deletes()

    def commit_deletes(self) -> None:
        for message in self.deleted:
            try:
                self.box.delete(message)
            except OSError as error:
                self.io.log("message {id} not deleted: {error}", id=message.id, error=error)
        if self.deleted:
            self.io.log("subscriber access: {mailbox}: {n} message(s) deleted", mailbox=self.mailbox,
                        n=len(self.deleted))
        self.deleted = []

    def _listed(self) -> list[Message]:
        gone = {m.id for m in self.deleted}
        return [m for m in self.box.messages(self.mailbox) if m.id not in gone]

    def unheard(self) -> list[Message]:
        """New messages, urgent ones first (oldest first within each)."""
        return sorted((m for m in self._listed() if not m.read), key=lambda m: not m.urgent)

    def saved(self) -> list[Message]:
        return [m for m in self._listed() if m.read]

    # --- menus ---------------------------------------------------------------------------------
    async def main_menu(self) -> None:
        speak = self.speak
        while not self.io.ended:
            key = await choose(speak, await speak.audio("menu.main"), "1234*")
            if key is None:
                return
            if key == "*":
                await speak.goodbye()
                return
            if key in "12":
                kind = "new" if key == "1" else "saved"
                found = self.unheard() if key == "1" else self.saved()
                await speak.clips(speech.count(kind, len(found), speak.lang), tone="count-pip", barge_in=True)
                if found and not await self.play_messages(found):
                    return
            elif key == "3":
                if not await self.greetings_menu():
                    return
            elif key == "4":
                await self.change_pin()

    async def play_messages(self, messages: list[Message]) -> bool:
        """The messages, each followed by the message menu; False once the call is over."""
        io, speak = self.io, self.speak
        queue = list(messages)
        first = True
        while queue:
            message = queue.pop(0)
            await speak.say("message.first" if first else "message.next", barge_in=True)
            if message.urgent:
                await speak.say("message.urgent", barge_in=True)
            first = False
            replay = True
            while replay:
                replay = False
                if io.ended:
                    return False
                finished = await io.play(self.box.audio(message, io.codec), barge_in=True)
                if finished and not message.read:
                    self.box.mark_read(message)
                while True:
                    key = await choose(speak, await speak.audio("menu.message"), "1237589*#")
                    if key is None:
                        return False
                    if key == "1":
                        replay = True
                        break
                    if key == "3":
                        await speak.clips(speech.envelope(message.caller, message.timestamp, message.duration,
                                                          speak.lang, self.box.zone), barge_in=True)
                        continue
                    if key == "7":
                        self.deleted.append(message)
                        io.log("subscriber access: {mailbox}: message {id} deleted (undo until hang-up)",
                               mailbox=self.mailbox, id=message.id)
                        await speak.say("message.deleted")
                        break
                    if key == "8":
                        if self.deleted:
                            restored = self.deleted.pop()
                            queue.insert(0, restored)
                            io.log("subscriber access: {mailbox}: message {id} restored", mailbox=self.mailbox,
                                   id=restored.id)
                            await speak.say("message.restored")
                        else:
                            await speak.say("message.nothing_to_undo")
                        continue
                    if key == "9":
                        if not message.read:
                            self.box.mark_read(message)
                        await speak.say("message.saved")
                        break
                    if key == "*":
                        return True
                    break  # 2 (or #, which also skips the rest of a message): next
        await speak.say("messages.end")
        return not io.ended

    async def greetings_menu(self) -> bool:
        speak = self.speak
        while not self.io.ended:
            key = await choose(speak, await speak.audio("menu.greetings"), "123*")
            if key is None:
                return False
            if key == "*":
                return True
            if key in "12":
                await self.record_greeting(away=key == "2")
            else:
                path = self.speak.prompts.greeting_path(self.mailbox, away=True)
                if path is not None:
                    path.unlink(missing_ok=True)
                self.io.log("subscriber access: {mailbox}: away greeting off", mailbox=self.mailbox)
                await speak.say("greeting.away_off")
        return False

    async def record_greeting(self, away: bool) -> bool:
        io, speak = self.io, self.speak
        await speak.say("record.after_tone", barge_in=True)
        await io.play(self.prompts.get("beep", io.codec))
        audio = await io.capture(GREETING_SECONDS)
        path = self.prompts.greeting_path(self.mailbox, away)
        if not audio or path is None:
            if not io.ended:
                await speak.say("greeting.nothing")
            return False
        save_greeting(path, io.codec, audio)
        io.log("subscriber access: {mailbox}: {kind} greeting recorded ({seconds:.1f}s)", mailbox=self.mailbox,
               kind="away" if away else "personal", seconds=len(audio) / 8000)
        if not io.ended:
            await speak.say("greeting.saved")
        return True

    async def change_pin(self) -> bool:
        """Choose a PIN the policy accepts, typed twice (three tries)."""
        io, speak = self.io, self.speak
        policy = self.box.policy_of(self.mailbox)
        for _ in range(MAX_FAILURES):
            if io.ended:
                return False
            await speak.say("pin.choose", barge_in=True, count=policy.min_length)
            first = await io.collect(policy.max_length, DIGIT_TIMEOUT)
            if first is None:
                return False
            try:
                policy.check(first)
            except PinPolicyError as error:
                io.log("subscriber access: {mailbox}: new PIN refused: {why}", mailbox=self.mailbox, why=error)
                await speak.say("pin.weak")
                continue
            await speak.say("pin.again", barge_in=True)
            again = await io.collect(policy.max_length, DIGIT_TIMEOUT)
            if again is None:
                return False
            if again != first:
                await speak.say("pin.mismatch")
                continue
            await asyncio.get_event_loop().run_in_executor(None, self.box.set_pin, self.mailbox, first)
            io.log("subscriber access: {mailbox}: PIN changed by phone", mailbox=self.mailbox)
            await speak.say("pin.changed")
            return True
        return False


def save_greeting(path: Path, codec: str, audio: bytes) -> None:
    """A greeting WAV in the worker's codec, replaced atomically (the old one plays until then)."""
    atomic_write(path, wav.encode(codec, audio), path.parent / ".tmp", mode=0o644)


async def subscriber_access(io: MenuIO, prompts: Prompts, lang: str, box: Mailbox, mailbox: str | None,
                            caller: str) -> str:
    return await Session(io, prompts, lang, box, caller).run(mailbox)


__all__ = ["Mailbox", "MenuIO", "Session", "choose", "save_greeting", "subscriber_access", "take_message"]
