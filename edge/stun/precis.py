"""RFC 8265 OpaqueString preparation, with the standard library only.

STUN keys (RFC 8489 §9) hash the password and realm after the OpaqueString
profile of PRECIS, so two clients that type the same password in different
Unicode forms get the same key, and passwords made of characters PRECIS
forbids are refused up front rather than producing a key nobody can match.

The profile, applied in the order RFC 8264 §7 gives:

1. additional mapping: every non-ASCII space (category Zs) becomes U+0020;
2. normalization form C;
3. every code point must be allowed by the FreeformClass (RFC 8264 §4.3):
   letters, marks, digits, punctuation, symbols and spaces are; controls,
   format characters, surrogates, private use, unassigned code points, line
   and paragraph separators, default-ignorable code points and old Hangul
   jamo are not;
4. the result must not be empty.

No case, width or compatibility mapping: OpaqueString keeps those as typed.
Known approximation: ZERO WIDTH (NON-)JOINER are CONTEXTJ in PRECIS (allowed
after a virama); this module refuses them outright.
"""

from __future__ import annotations

import unicodedata

__all__ = ["opaque_string"]

_SPACE = "\u0020"

# Categories FreeformClass never allows (RFC 8264 §9: Controls, Unassigned,
# and everything that is not LetterDigits/OtherLetterDigits/Spaces/Symbols/
# Punctuation).  Cf covers most default-ignorables too.
_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})

# Default_Ignorable_Code_Point (Unicode DerivedCoreProperties) outside the
# categories above, plus Hangul_Syllable_Type L/V/T ("OldHangulJamo").
_FORBIDDEN_RANGES: tuple[tuple[int, int], ...] = (
    (0x034F, 0x034F),  # COMBINING GRAPHEME JOINER
    (0x1100, 0x11FF),  # Hangul Jamo (L, V, T) incl. fillers 115F/1160
    (0x17B4, 0x17B5),  # Khmer inherent vowels
    (0x180B, 0x180F),  # Mongolian free variation selectors
    (0x3164, 0x3164),  # HANGUL FILLER
    (0xA960, 0xA97F),  # Hangul Jamo Extended-A (L)
    (0xD7B0, 0xD7FF),  # Hangul Jamo Extended-B (V, T)
    (0xFE00, 0xFE0F),  # variation selectors
    (0xFFA0, 0xFFA0),  # HALFWIDTH HANGUL FILLER
    (0xE0100, 0xE01EF),  # variation selectors supplement
)


def _allowed(ch: str) -> bool:
    cp = ord(ch)
    if 0x21 <= cp <= 0x7E or cp == 0x20:
        return True  # fast path: printable ASCII
    if unicodedata.category(ch) in _FORBIDDEN_CATEGORIES:
        return False
    for low, high in _FORBIDDEN_RANGES:
        if low <= cp <= high:
            return False
    return True


def opaque_string(value: str) -> str:
    """Prepare ``value`` with the OpaqueString profile; ValueError if refused."""
    if not isinstance(value, str):
        raise TypeError("OpaqueString needs a str")
    if value.isascii():
        prepared = value  # NFC and the space mapping leave ASCII unchanged
    else:
        mapped = "".join(
            _SPACE if ch != _SPACE and unicodedata.category(ch) == "Zs" else ch
            for ch in value
        )
        prepared = unicodedata.normalize("NFC", mapped)
    if not prepared:
        raise ValueError("OpaqueString: empty string")
    for ch in prepared:
        if not _allowed(ch):
            raise ValueError(f"OpaqueString: disallowed code point U+{ord(ch):04X}")
    return prepared
