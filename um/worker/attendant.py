"""An auto attendant's call: welcome, the menu (business hours or after hours), and what a key does.

Keys lead to a transfer (an extension of the dial plan, a number its
`allowed_numbers` permit, the operator), a sub-menu (`*` goes back), dial by
extension, dial by name (keys 2-9 spell the start of a directory name's
word; one match is transferred, several are offered as a menu), or leaving a
voicemail for a mailbox. A transfer is a REFER toward the gateway (the call
ends once the gateway's NOTIFY reports success) or, for a gateway with
`refer = false`, the INVITE's 302 before the call was ever answered (the menu
ran as early media). Menus are um.worker.menus.choose: three failures say
goodbye and hang up.
"""

from __future__ import annotations

import asyncio
from typing import Any

from um.attendants import AutoAttendant, MenuItem, letters_match
from um.worker import menus
from um.worker.speech import Clip, phrase

MAX_NAME_MATCHES = 9


class AttendantCall:
    def __init__(self, call: Any, context: Any, attendant: AutoAttendant) -> None:
        self.call, self.context, self.attendant = call, context, attendant
        plan = context.directory.plans.get(attendant.dial_plan)
        self.plan = plan
        lang = attendant.language or (plan.language if plan is not None else "en")
        self.speak = menus.Speaker(call, context.prompts, lang)

    def target_uri(self, number: str) -> str:
        """Where the gateway sends the caller: the number at the gateway (its host, as it reached us)."""
        host = self.call.peer.host
        host = f"[{host}]" if ":" in host else host
        return f"sip:{number}@{host}"

    async def menu_prompt(self, welcome: str, items: tuple[MenuItem, ...], default_welcome: str) -> bytes:
        lang = self.speak.lang
        clips: list[Clip] = [Clip("text", welcome)] if welcome else phrase(default_welcome, lang)
        for item in items:
            if item.label:
                clips += phrase("attendant.option", lang, label=item.label, key=item.key)
        return await asyncio.get_event_loop().run_in_executor(
            None, lambda: self.speak.prompts.sentences(clips, lang, self.call.codec, tone="menu"))

    async def run(self) -> str:
        attendant = self.attendant
        open_now = attendant.is_open()
        items = attendant.menu if open_now else attendant.after_hours_menu
        welcome = attendant.welcome if open_now else attendant.after_hours_welcome
        self.call.log("auto attendant {number}: {hours}", number=attendant.number,
                      hours="business hours" if open_now else "after hours")
        if not items:
            await self.speak.clips([Clip("text", welcome)] if welcome else phrase(
                "attendant.welcome" if open_now else "attendant.closed", self.speak.lang))
            await self.speak.goodbye()
            return "no-menu"
        return await self.menu(items, welcome, "attendant.welcome" if open_now else "attendant.closed", top=True)

    async def menu(self, items: tuple[MenuItem, ...], welcome: str, default_welcome: str, top: bool) -> str:
        keys = "".join(item.key for item in items) + ("" if top else "*")
        while not self.call.ended:
            prompt = await self.menu_prompt(welcome, items, default_welcome)
            key = await menus.choose(self.speak, prompt, keys)
            if key is None:
                return "failed"
            if key == "*" and not top and not any(i.key == "*" for i in items):
                return "back"
            item = next(i for i in items if i.key == key)
            self.call.log("auto attendant {number}: key {key}: {action} {target}", number=self.attendant.number,
                          key=key, action=item.action, target=item.target)
            outcome = await self.act(item)
            if outcome != "again":
                return outcome
            welcome, default_welcome = "", "attendant.welcome"  # later rounds: the options only
        return "hangup"

    async def act(self, item: MenuItem) -> str:
        if item.action == "menu":
            outcome = await self.menu(item.menu, item.label, "attendant.welcome", top=False)
            return "again" if outcome == "back" else outcome
        if item.action == "transfer":
            return await self.transfer(item.target)
        if item.action == "number":
            if self.plan is None or not self.plan.allows(item.target):
                self.call.log("auto attendant: {number} is not allowed by the dial plan", number=item.target)
                await self.speak.say("attendant.transfer_failed")
                return "again"
            return await self.transfer(item.target)
        if item.action == "operator":
            return await self.transfer(self.attendant.operator)
        if item.action == "dial-extension":
            return await self.dial_extension()
        if item.action == "dial-name":
            return await self.dial_name()
        if item.action == "voicemail":
            self.call.answer_now()
            await menus.take_message(self.call, item.target, self.context.prompts, self.speak.lang)
            return "voicemail"
        return "again"

    async def transfer(self, number: str) -> str:
        if not self.call.early:
            await self.speak.say("attendant.transfer")
        if await self.call.transfer(self.target_uri(number)):
            return "transferred"
        if not self.call.ended:
            await self.speak.say("attendant.transfer_failed")
        return "again"

    async def dial_extension(self) -> str:
        await self.speak.say("attendant.extension", barge_in=True)
        extension = await self.call.collect(20, menus.DIGIT_TIMEOUT)
        if extension is None:
            return "hangup"
        if self.plan is not None and self.context.directory.mailbox(self.plan, extension) == extension:
            return await self.transfer(extension)
        await self.speak.say("extension.unknown")
        return "again"

    def names(self) -> list[tuple[str, str]]:
        """(name, extension) of the directory's named mailboxes in the attendant's dial plan."""
        current = self.context.directory.current() if hasattr(self.context.directory, "current") else \
            self.context.directory
        return [(m.name, m.extension) for m in current.directory.mailboxes
                if m.name and m.dial_plan in ("", self.attendant.dial_plan)]

    async def dial_name(self) -> str:
        await self.speak.say("attendant.spell", barge_in=True)
        typed = await self.call.collect(20, menus.DIGIT_TIMEOUT)
        if typed is None:
            return "hangup"
        found = [entry for entry in self.names() if letters_match(typed, entry[0])][:MAX_NAME_MATCHES]
        self.call.log("auto attendant: dial by name {typed!r}: {found}", typed=typed,
                      found=", ".join(f"{n} ({e})" for n, e in found) or "no match")
        if not found:
            await self.speak.say("attendant.no_match")
            return "again"
        if len(found) == 1:
            return await self.transfer(found[0][1])
        choices = tuple(MenuItem(str(index + 1), "transfer", extension, name)
                        for index, (name, extension) in enumerate(found))
        outcome = await self.menu(choices, "", "attendant.welcome", top=False)
        return "again" if outcome == "back" else outcome


async def run_attendant(call: Any, context: Any) -> str:
    attendant = call.attendant
    if attendant is None:
        await call.hangup()
        return "none"
    return await AttendantCall(call, context, attendant).run()


__all__ = ["AttendantCall", "run_attendant"]
