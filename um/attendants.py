"""Auto attendants ([[callrouter.auto_attendants]]): parsed config values and business hours.

An auto attendant answers a dial plan's auto-attendant number with a menu:
keys map to actions (transfer to an extension, to a number the dial plan's
`allowed_numbers` permit, a sub-menu, dial by extension, dial by name,
leave a voicemail, the operator). Business hours are weekday/time ranges in
the attendant's time zone (zoneinfo); outside them the after-hours menu
plays. Parsing raises DirectoryError naming the key and what is allowed.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from um.directory import LANGUAGES, DirectoryError

ACTIONS = ("transfer", "number", "menu", "dial-extension", "dial-name", "voicemail", "operator")
KEYS = "0123456789*#"
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_HOURS = re.compile(r"^(mon|tue|wed|thu|fri|sat|sun)(?:-(mon|tue|wed|thu|fri|sat|sun))?\s+"
                    r"([01][0-9]|2[0-3]):([0-5][0-9])-([01][0-9]|2[0-4]):([0-5][0-9])$")
_NUMBER = re.compile(r"^\+?[0-9]{1,32}$")
MAX_DEPTH = 3


@dataclass(frozen=True)
class MenuItem:
    key: str
    action: str
    target: str = ""
    label: str = ""
    menu: tuple[MenuItem, ...] = ()


@dataclass(frozen=True)
class Hours:
    first_day: int
    last_day: int
    start: int  # minutes after midnight
    end: int

    def covers(self, when: dt.datetime) -> bool:
        day = when.weekday()
        days = range(self.first_day, self.last_day + 1) if self.first_day <= self.last_day else \
            [*range(self.first_day, 7), *range(0, self.last_day + 1)]
        minute = when.hour * 60 + when.minute
        return day in days and self.start <= minute < self.end


@dataclass(frozen=True)
class AutoAttendant:
    number: str
    dial_plan: str
    language: str = ""         # "" for the dial plan's
    time_zone: str = "UTC"
    business_hours: tuple[Hours, ...] = ()  # none: always open
    welcome: str = ""          # spoken text; "" for the catalogue's "Welcome."
    after_hours_welcome: str = ""
    operator: str = ""         # an extension or number
    menu: tuple[MenuItem, ...] = ()
    after_hours_menu: tuple[MenuItem, ...] = ()

    def is_open(self, now: dt.datetime | None = None) -> bool:
        if not self.business_hours:
            return True
        local = (now or dt.datetime.now(dt.UTC)).astimezone(ZoneInfo(self.time_zone))
        return any(hours.covers(local) for hours in self.business_hours)


def _str(value: Any, what: str, allowed: str = "a string", pattern: re.Pattern[str] | None = None) -> str:
    if not isinstance(value, str) or (pattern is not None and not pattern.match(value)):
        raise DirectoryError(f"{what} {value!r}: allowed {allowed}")
    return value


def parse_hours(value: Any) -> tuple[Hours, ...]:
    allowed = 'a list such as ["mon-fri 08:00-17:00", "sat 09:00-12:00"]'
    if not isinstance(value, list):
        raise DirectoryError(f"business_hours: allowed {allowed}")
    found = []
    for item in value:
        match = _HOURS.match(item.strip().lower()) if isinstance(item, str) else None
        if match is None:
            raise DirectoryError(f"business_hours {item!r}: allowed {allowed}")
        first, last, h1, m1, h2, m2 = match.groups()
        start, end = int(h1) * 60 + int(m1), int(h2) * 60 + int(m2)
        if end <= start or end > 24 * 60:
            raise DirectoryError(f"business_hours {item!r}: the end must be after the start, at most 24:00")
        found.append(Hours(DAYS.index(first), DAYS.index(last or first), start, end))
    return tuple(found)


def parse_menu(value: Any, what: str = "menu", depth: int = 1) -> tuple[MenuItem, ...]:
    if not isinstance(value, list):
        raise DirectoryError(f'{what}: allowed a list of tables such as [{{ key = "1", action = "transfer", '
                             'target = "1001", label = "Sales" }]')
    items, keys = [], set()
    for entry in value:
        if not isinstance(entry, dict):
            raise DirectoryError(f"{what}: each entry is a table with key, action (and target, label, menu)")
        unknown = set(entry) - {"key", "action", "target", "label", "menu"}
        if unknown:
            raise DirectoryError(f"unknown key {sorted(unknown)[0]!r} in a {what} entry; allowed: key, action, "
                                 "target, label, menu")
        key = _str(entry.get("key"), f"{what} key", "one of 0-9, * and #")
        if len(key) != 1 or key not in KEYS:
            raise DirectoryError(f"{what} key {key!r}: allowed one of 0-9, * and #")
        if key in keys:
            raise DirectoryError(f"{what} key {key!r} is used twice")
        keys.add(key)
        action = entry.get("action")
        if action not in ACTIONS:
            raise DirectoryError(f"{what} action {action!r}: allowed " + ", ".join(f'"{a}"' for a in ACTIONS))
        target = _str(entry.get("target", ""), f"{what} target")
        if action in ("transfer", "number", "voicemail") and not _NUMBER.match(target):
            raise DirectoryError(f"{what} key {key}: action {action} needs a target of digits (optional '+')")
        label = _str(entry.get("label", ""), f"{what} label")[:100]
        sub: tuple[MenuItem, ...] = ()
        if action == "menu":
            if depth >= MAX_DEPTH:
                raise DirectoryError(f"{what}: sub-menus nest at most {MAX_DEPTH} deep")
            sub = parse_menu(entry.get("menu", []), f"{what} key {key} menu", depth + 1)
            if not sub:
                raise DirectoryError(f"{what} key {key}: a sub-menu needs entries (menu = [...])")
        items.append(MenuItem(key, str(action), target, label, sub))
    return tuple(items)


def parse_auto_attendants(value: Any) -> tuple[AutoAttendant, ...]:
    if not isinstance(value, list):
        raise DirectoryError('a list of tables such as [{ number = "5002", dial_plan = "default", menu = [...] }]')
    found = []
    allowed_keys = {"number", "dial_plan", "language", "time_zone", "business_hours", "welcome",
                    "after_hours_welcome", "operator", "menu", "after_hours_menu"}
    for item in value:
        if not isinstance(item, dict):
            raise DirectoryError("each auto attendant is a table with number, dial_plan and menu")
        unknown = set(item) - allowed_keys
        if unknown:
            raise DirectoryError(f"unknown key {sorted(unknown)[0]!r} in an auto attendant; allowed: "
                                 + ", ".join(sorted(allowed_keys)))
        number = _str(item.get("number"), "auto attendant number", "digits with an optional '+'", _NUMBER)
        plan = _str(item.get("dial_plan"), "auto attendant dial_plan", "a dial plan name")
        language = item.get("language", "")
        if language not in ("", *LANGUAGES):
            raise DirectoryError(f"auto attendant language {language!r}: allowed \"\" (the dial plan's) or "
                                 + " or ".join(f'"{lang}"' for lang in LANGUAGES))
        zone = _str(item.get("time_zone", "UTC"), "time_zone", "an IANA time zone such as \"Europe/Berlin\"")
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise DirectoryError(f"time_zone {zone!r}: allowed an IANA time zone such as \"Europe/Berlin\"") from None
        operator = _str(item.get("operator", ""), "operator", "digits with an optional '+', or \"\"")
        if operator and not _NUMBER.match(operator):
            raise DirectoryError(f"operator {operator!r}: allowed digits with an optional '+', or \"\"")
        menu = parse_menu(item.get("menu", []))
        after = parse_menu(item.get("after_hours_menu", []), "after_hours_menu")
        for entry in (*menu, *after):
            if entry.action == "operator" and not operator:
                raise DirectoryError(f"auto attendant {number}: key {entry.key} is the operator, but no operator "
                                     "is set")
        found.append(AutoAttendant(number, plan, str(language), zone, parse_hours(item.get("business_hours", [])),
                                   _str(item.get("welcome", ""), "welcome")[:300],
                                   _str(item.get("after_hours_welcome", ""), "after_hours_welcome")[:300],
                                   operator, menu, after))
    numbers = [a.number for a in found]
    if len(set(numbers)) != len(numbers):
        raise DirectoryError("auto attendant numbers must be unique")
    return tuple(found)


def letters_match(typed: str, name: str) -> bool:
    """Dial by name: the typed keys (2 ABC ... 9 WXYZ) start one of the name's words."""
    digits = "".join(c for c in typed if c in "23456789")
    if not digits:
        return False
    return any(word_keys(word).startswith(digits) for word in name.split())


_LETTERS = {c: d for d, group in {"2": "abc", "3": "def", "4": "ghi", "5": "jkl", "6": "mno", "7": "pqrs",
                                  "8": "tuv", "9": "wxyz"}.items() for c in group}
_FOLD = str.maketrans({"ä": "a", "ö": "o", "ü": "u", "ß": "s", "é": "e", "è": "e", "á": "a", "à": "a"})


def word_keys(word: str) -> str:
    return "".join(_LETTERS.get(c, "") for c in word.lower().translate(_FOLD))


__all__ = ["ACTIONS", "AutoAttendant", "MenuItem", "letters_match", "parse_auto_attendants", "word_keys"]


def config_problems(callrouter: Any) -> list[tuple[str, str]]:
    """Cross-checks with the dial plans: (key, message) for each attendant the call router could not reach."""
    plans = {plan.name: plan for plan in callrouter.dial_plans}
    found = []
    for attendant in callrouter.auto_attendants:
        plan = plans.get(attendant.dial_plan)
        if plan is None:
            found.append(("[callrouter].auto_attendants", f"auto attendant {attendant.number}: dial_plan "
                          f"{attendant.dial_plan!r} is not a dial plan; allowed: " + ", ".join(sorted(plans))))
        elif attendant.number not in plan.auto_attendant_numbers:
            found.append(("[callrouter].auto_attendants", f"auto attendant {attendant.number} is not in dial plan "
                          f"{plan.name}'s auto_attendant_numbers; allowed: one of "
                          f"{list(plan.auto_attendant_numbers)} (add it there)"))
    return found
