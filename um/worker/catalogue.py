"""The prompt catalogue: every sentence a caller can hear, per language (en, de), and the words of numbers.

A sentence may hold slots (`{extension}`, `{count}`, `{date}` ...): the parts
between slots are rendered once as their own clips (`<name>` when there is no
slot, else `<name>.0`, `<name>.1`, ...), and um.worker.speech fills the slots
with clips of digits, numbers, dates and names at play time. Grammar that
depends on a number (one message, two messages; eine Nachricht, zwei
Nachrichten) is chosen by picking the sentence (`count.new.one` or
`count.new.many`), so every language says it its own way.
"""

from __future__ import annotations

import re

LANGUAGES = ("en", "de")
VOICES = {"en": "en-us", "de": "de"}  # espeak-ng voices
SLOT = re.compile(r"\{([a-z_]+)\}")

SENTENCES: dict[str, dict[str, str]] = {
    "greeting.default": {
        "en": "The person at extension {extension} is not available. Please leave a message after the tone.",
        "de": "Der Teilnehmer mit der Durchwahl {extension} ist nicht erreichbar. "
              "Bitte hinterlassen Sie nach dem Signalton eine Nachricht."},
    "record.after_tone": {
        "en": "Please record after the tone. Press pound when you are finished.",
        "de": "Bitte sprechen Sie nach dem Signalton. Drücken Sie die Raute-Taste, wenn Sie fertig sind."},
    "message.stored": {"en": "Thank you. Your message has been saved.",
                       "de": "Vielen Dank. Ihre Nachricht wurde gespeichert."},
    "goodbye": {"en": "Goodbye.", "de": "Auf Wiederhören."},
    "extension.enter": {"en": "Please enter your extension, followed by pound.",
                        "de": "Bitte geben Sie Ihre Durchwahl ein, gefolgt von der Raute-Taste."},
    "extension.unknown": {"en": "That extension is not valid.", "de": "Diese Durchwahl ist ungültig."},
    "pin.enter": {"en": "Please enter your pin, followed by pound.",
                  "de": "Bitte geben Sie Ihre PIN ein, gefolgt von der Raute-Taste."},
    "pin.wrong": {"en": "That pin is not correct.", "de": "Diese PIN ist nicht richtig."},
    "pin.locked": {"en": "Your mailbox is locked. Please call your administrator.",
                   "de": "Ihr Postfach ist gesperrt. Bitte wenden Sie sich an Ihren Administrator."},
    "pin.none": {"en": "This mailbox has no pin yet. Please call from your own phone, or ask your administrator.",
                 "de": "Dieses Postfach hat noch keine PIN. Bitte rufen Sie von Ihrem eigenen Telefon an, "
                       "oder wenden Sie sich an Ihren Administrator."},
    "setup.welcome": {"en": "Welcome to your new mailbox. First, choose a pin.",
                      "de": "Willkommen in Ihrem neuen Postfach. Wählen Sie zuerst eine PIN."},
    "pin.choose": {"en": "Please enter a new pin of at least {count} digits, followed by pound.",
                   "de": "Bitte geben Sie eine neue PIN mit mindestens {count} Ziffern ein, "
                         "gefolgt von der Raute-Taste."},
    "pin.again": {"en": "Please enter the new pin again.", "de": "Bitte geben Sie die neue PIN noch einmal ein."},
    "pin.mismatch": {"en": "The two pins do not match.", "de": "Die beiden PINs stimmen nicht überein."},
    "pin.weak": {"en": "That pin is not allowed. Do not repeat one digit or use a run of digits.",
                 "de": "Diese PIN ist nicht erlaubt. Wiederholen Sie keine Ziffer und verwenden Sie keine "
                       "Zahlenfolge."},
    "pin.changed": {"en": "Your pin has been changed.", "de": "Ihre PIN wurde geändert."},
    "setup.greeting": {"en": "Now record your personal greeting.",
                       "de": "Sprechen Sie jetzt Ihre persönliche Ansage auf."},
    "count.new.none": {"en": "You have no new messages.", "de": "Sie haben keine neuen Nachrichten."},
    "count.new.one": {"en": "You have one new message.", "de": "Sie haben eine neue Nachricht."},
    "count.new.many": {"en": "You have {count} new messages.", "de": "Sie haben {count} neue Nachrichten."},
    "count.saved.none": {"en": "You have no saved messages.", "de": "Sie haben keine gespeicherten Nachrichten."},
    "count.saved.one": {"en": "You have one saved message.", "de": "Sie haben eine gespeicherte Nachricht."},
    "count.saved.many": {"en": "You have {count} saved messages.",
                         "de": "Sie haben {count} gespeicherte Nachrichten."},
    "menu.main": {
        "en": "Main menu. For new messages, press 1. For saved messages, press 2. "
              "For your greetings, press 3. To change your pin, press 4. To end the call, press star.",
        "de": "Hauptmenü. Für neue Nachrichten drücken Sie die 1. Für gespeicherte Nachrichten drücken Sie die 2. "
              "Für Ihre Ansagen drücken Sie die 3. Um Ihre PIN zu ändern, drücken Sie die 4. "
              "Um das Gespräch zu beenden, drücken Sie die Stern-Taste."},
    "menu.message": {
        "en": "To replay, press 1. For the next message, press 2. For the details, press 3. "
              "To delete, press 7. To undo a delete, press 8. To save, press 9. For the main menu, press star.",
        "de": "Zum Wiederholen drücken Sie die 1. Für die nächste Nachricht die 2. Für die Details die 3. "
              "Zum Löschen die 7. Um das Löschen rückgängig zu machen, die 8. Zum Speichern die 9. "
              "Für das Hauptmenü die Stern-Taste."},
    "menu.greetings": {
        "en": "To record your personal greeting, press 1. To record your away greeting, press 2. "
              "To turn the away greeting off, press 3. For the main menu, press star.",
        "de": "Um Ihre persönliche Ansage aufzunehmen, drücken Sie die 1. Für Ihre Abwesenheitsansage die 2. "
              "Um die Abwesenheitsansage auszuschalten, die 3. Für das Hauptmenü die Stern-Taste."},
    "menu.invalid": {"en": "That's not a valid choice.", "de": "Das ist keine gültige Auswahl."},
    "message.first": {"en": "First message.", "de": "Erste Nachricht."},
    "message.next": {"en": "Next message.", "de": "Nächste Nachricht."},
    "message.urgent": {"en": "Marked urgent.", "de": "Als dringend markiert."},
    "message.from": {"en": "Message from {caller}.", "de": "Nachricht von {caller}."},
    "message.from_unknown": {"en": "Message from an unknown caller.",
                             "de": "Nachricht von einem unbekannten Anrufer."},
    "message.received": {"en": "Received {date}, at {time}.", "de": "Empfangen am {date}, um {time}."},
    "message.length": {"en": "Length {duration}.", "de": "Länge {duration}."},
    "message.saved": {"en": "Message saved.", "de": "Nachricht gespeichert."},
    "message.deleted": {"en": "Message deleted.", "de": "Nachricht gelöscht."},
    "message.restored": {"en": "Message restored.", "de": "Nachricht wiederhergestellt."},
    "message.nothing_to_undo": {"en": "There is nothing to undo.", "de": "Es gibt nichts rückgängig zu machen."},
    "messages.end": {"en": "No more messages.", "de": "Keine weiteren Nachrichten."},
    "greeting.saved": {"en": "Your greeting has been saved.", "de": "Ihre Ansage wurde gespeichert."},
    "greeting.away_off": {"en": "Your away greeting is off.", "de": "Ihre Abwesenheitsansage ist ausgeschaltet."},
    "greeting.nothing": {"en": "Nothing was recorded.", "de": "Es wurde nichts aufgenommen."},
    "attendant.welcome": {"en": "Welcome.", "de": "Willkommen."},
    "attendant.closed": {"en": "Our office is closed now.", "de": "Unser Büro ist jetzt geschlossen."},
    "attendant.option": {"en": "For {label}, press {key}.", "de": "Für {label} drücken Sie die {key}."},
    "attendant.extension": {"en": "Please enter the extension, followed by pound.",
                            "de": "Bitte geben Sie die Durchwahl ein, gefolgt von der Raute-Taste."},
    "attendant.spell": {"en": "Please spell the name of the person you are calling, followed by pound.",
                        "de": "Bitte buchstabieren Sie den Namen der gewünschten Person, "
                              "gefolgt von der Raute-Taste."},
    "attendant.no_match": {"en": "No one of that name was found.", "de": "Unter diesem Namen wurde niemand gefunden."},
    "attendant.transfer": {"en": "Please hold, your call is being transferred.",
                           "de": "Bitte warten Sie, Sie werden verbunden."},
    "attendant.transfer_failed": {"en": "The transfer did not succeed.", "de": "Die Weiterleitung ist fehlgeschlagen."},
}

_EN_UNITS = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
             "sixteen seventeen eighteen nineteen").split()
_EN_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_DE_UNITS = ("null eins zwei drei vier fünf sechs sieben acht neun zehn elf zwölf dreizehn vierzehn fünfzehn "
             "sechzehn siebzehn achtzehn neunzehn").split()
_DE_TENS = "_ _ zwanzig dreißig vierzig fünfzig sechzig siebzig achtzig neunzig".split()
_EN_ORD = ("_ first second third fourth fifth sixth seventh eighth ninth tenth eleventh twelfth thirteenth "
           "fourteenth fifteenth sixteenth seventeenth eighteenth nineteenth").split()
KEYS = {"en": {"*": "star", "#": "pound"}, "de": {"*": "Stern", "#": "Raute"}}
WEEKDAYS = {"en": "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split(),
            "de": "Montag Dienstag Mittwoch Donnerstag Freitag Samstag Sonntag".split()}
MONTHS = {"en": "January February March April May June July August September October November December".split(),
          "de": "Januar Februar März April Mai Juni Juli August September Oktober November Dezember".split()}
UNITS = {"en": {"minute": ("minute", "minutes"), "second": ("second", "seconds"), "oclock": "o'clock",
                "hundred": "hundred", "thousand": "thousand"},
         "de": {"minute": ("Minute", "Minuten"), "second": ("Sekunde", "Sekunden"), "oclock": "Uhr",
                "hundred": "hundert", "thousand": "tausend"}}


def number_text(n: int, lang: str, feminine: bool = False) -> str:
    """0-99 in words. German counts feminine nouns with "eine" (eine Nachricht, eine Minute)."""
    if not 0 <= n <= 99:
        raise ValueError("0-99")
    if lang == "de":
        if n == 1:
            return "eine" if feminine else "eins"
        if n < 20:
            return _DE_UNITS[n]
        tens, unit = divmod(n, 10)
        if unit == 0:
            return _DE_TENS[tens]
        return ("ein" if unit == 1 else _DE_UNITS[unit]) + "und" + _DE_TENS[tens]
    if n < 20:
        return _EN_UNITS[n]
    tens, unit = divmod(n, 10)
    return _EN_TENS[tens] + (f"-{_EN_UNITS[unit]}" if unit else "")


def ordinal_text(n: int, lang: str) -> str:
    """1-31 as the day of a date: "twenty-ninth"; German in the dative of "am ...": "neunundzwanzigsten"."""
    if not 1 <= n <= 31:
        raise ValueError("1-31")
    if lang == "de":
        special = {1: "ersten", 3: "dritten", 7: "siebten", 8: "achten"}
        if n in special:
            return special[n]
        return number_text(n, "de") + ("ten" if n < 20 else "sten")
    if n < 20:
        return _EN_ORD[n]
    tens, unit = divmod(n, 10)
    if unit == 0:
        return _EN_TENS[tens][:-1] + "ieth"
    return f"{_EN_TENS[tens]}-{_EN_ORD[unit]}"


def parts(text: str) -> list[str]:
    """A sentence split at its slots: text, slot, text, slot, ... (slots at odd indexes)."""
    return SLOT.split(text)


def clips(lang: str) -> dict[str, str]:
    """Every clip of a language: name -> the text espeak-ng renders."""
    found: dict[str, str] = {}
    for name, texts in SENTENCES.items():
        pieces = parts(texts[lang])
        if len(pieces) == 1:
            found[name] = pieces[0]
            continue
        for index, piece in enumerate(pieces[::2]):
            if piece.strip(" ,"):
                found[f"{name}.{index}"] = piece.strip()
    for n in range(100):
        found[f"number.{n}"] = number_text(n, lang)
    for n in range(10):  # read digit by digit, English says "oh" for 0 (as in phone numbers)
        found[f"digit.{n}"] = "oh" if (lang == "en" and n == 0) else number_text(n, lang)
    if lang == "de":
        found["number.1.f"] = number_text(1, lang, feminine=True)
    for n in range(1, 32):
        found[f"ordinal.{n}"] = ordinal_text(n, lang)
    for index, day in enumerate(WEEKDAYS[lang]):
        found[f"weekday.{index}"] = day
    for index, month in enumerate(MONTHS[lang], start=1):
        found[f"month.{index}"] = month
    for key, word in KEYS[lang].items():
        found[f"key.{'star' if key == '*' else 'pound'}"] = word
    units = UNITS[lang]
    for unit in ("minute", "second"):
        one, many = units[unit]
        found[f"unit.{unit}.one"], found[f"unit.{unit}.many"] = one, many
    for unit in ("oclock", "hundred", "thousand"):
        found[f"unit.{unit}"] = str(units[unit])
    found["plus"] = "plus"
    if lang == "en":
        found["oh"], found["time.am"], found["time.pm"] = "oh", "a m", "p m"
    return found


__all__ = ["LANGUAGES", "SENTENCES", "VOICES", "clips", "number_text", "ordinal_text", "parts"]
