"""What a call does, as scripts over a small call interface: take a message, or serve a subscriber.

The scripts know nothing of SIP, sockets or files: `CallIO` plays audio,
collects DTMF digits, records, checks PINs and hangs up. um.worker.call
implements it for real calls; the unit tests drive the scripts with a fake.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from um.worker.prompts import Prompts
from um.worker.store import Message


class CallIO(Protocol):
    codec: str
    ended: bool

    async def play(self, audio: bytes, barge_in: bool = False) -> bool: ...
    async def collect(self, max_digits: int, timeout: float, terminator: str = "#") -> str | None: ...
    async def record(self, mailbox: str) -> tuple[Message | None, str]: ...
    async def verify_pin(self, mailbox: str, pin: str) -> str: ...
    async def hangup(self) -> None: ...
    def log(self, text: str, **fields: Any) -> None: ...


async def take_message(io: CallIO, mailbox: str, prompts: Prompts) -> Message | None:
    """Call answering: greeting ('#' skips it), tone, record until BYE, '#', silence or the limit, store."""
    await io.play(prompts.greeting(mailbox, io.codec), barge_in=True)
    if io.ended:
        return None
    await io.play(prompts.get("beep", io.codec))
    if io.ended:
        return None
    message, reason = await io.record(mailbox)
    io.log("voicemail for {mailbox}: {outcome} ({reason})", mailbox=mailbox, reason=reason,
           outcome=f"message {message.id}, {message.duration:.2f}s" if message else "no message")
    if not io.ended:
        if message is not None:
            await io.play(prompts.get("saved", io.codec))
        await io.play(prompts.get("goodbye", io.codec))
        await io.hangup()
    return message


async def subscriber_access(io: CallIO, prompts: Prompts, *, mailbox: str | None, known: Callable[[str], bool],
                            messages: Callable[[str], list[Message]], audio: Callable[[Message, str], bytes],
                            mark_read: Callable[[Message], Any], max_attempts: int = 5,
                            digit_timeout: float = 10.0) -> str:
    """Outlook Voice Access: extension (unless the caller ID names one), PIN by DTMF, then new messages.

    Returns how it ended: "played", "locked", "no-pin", "failed", "hangup".
    """
    attempts = 0
    while not io.ended and attempts < max_attempts:
        if mailbox is None:
            await io.play(prompts.get("enter-extension", io.codec), barge_in=True)
            extension = await io.collect(20, digit_timeout)
            if extension is None:
                return "hangup"
            if not extension or not known(extension):
                attempts += 1
                io.log("subscriber access: unknown extension {extension!r}", extension=extension)
                await io.play(prompts.get("pin-wrong", io.codec))
                continue
            mailbox = extension
        await io.play(prompts.get("enter-pin", io.codec), barge_in=True)
        pin = await io.collect(24, digit_timeout)
        if pin is None:
            return "hangup"
        result = await io.verify_pin(mailbox, pin)
        io.log("subscriber access: PIN for {mailbox}: {result}", mailbox=mailbox, result=result)
        if result == "ok":
            break
        if result in ("locked", "no-pin"):
            await io.play(prompts.get("locked", io.codec))
            await io.hangup()
            return "locked" if result == "locked" else "no-pin"
        attempts += 1
        await io.play(prompts.get("pin-wrong", io.codec))
    else:
        if not io.ended:
            await io.play(prompts.get("goodbye", io.codec))
            await io.hangup()
        return "hangup" if io.ended else "failed"
    assert mailbox is not None
    new = [m for m in messages(mailbox) if not m.read]
    io.log("subscriber access: {mailbox} logged in, {n} new message(s)", mailbox=mailbox, n=len(new))
    await io.play(prompts.count(len(new), io.codec), barge_in=True)
    for message in new:
        if io.ended:
            return "hangup"
        await io.play(prompts.get("message", io.codec))
        await io.play(audio(message, io.codec), barge_in=True)  # '#' skips to the next message
        if io.ended:
            return "hangup"
        mark_read(message)
    if not io.ended:
        await io.play(prompts.get("goodbye", io.codec))
        await io.hangup()
    return "played"
