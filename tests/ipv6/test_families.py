"""um.worker.families: which offers a direct-media worker can answer, by address family."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from um.worker import families, sdp


def offer(session_c: str | None, media_c: str | None = None) -> sdp.Session:
    lines = ["v=0", "o=- 1 1 IN IP4 192.0.2.1", "s=-"]
    if session_c:
        lines.append(f"c=IN {'IP6' if ':' in session_c else 'IP4'} {session_c}")
    lines += ["t=0 0", "m=audio 4000 RTP/AVP 0"]
    if media_c:
        lines.append(f"c=IN {'IP6' if ':' in media_c else 'IP4'} {media_c}")
    return sdp.parse("\r\n".join(lines) + "\r\n")


@pytest.mark.parametrize("host,expected", [("127.0.0.1", {4}), ("0.0.0.0", {4}), ("::1", {6}), ("::", {4, 6}),
                                           ("[2001:db8::1]", {6}), ("worker.example.test", {4, 6})])
def test_host_families(host: str, expected: set[int]) -> None:
    assert families.host_families(host) == expected


def test_the_media_address_wins_over_the_session_address() -> None:
    assert families.offer_family(offer("192.0.2.1", "2001:db8::5")) == 6
    assert families.offer_family(offer("2001:db8::5")) == 6
    assert families.offer_family(offer(None)) is None


@pytest.mark.parametrize("host,address,refused", [("127.0.0.1", "2001:db8::5", True), ("::1", "192.0.2.1", True),
                                                  ("::", "2001:db8::5", False), ("127.0.0.1", "192.0.2.1", False)])
def test_direct_media_refuses_a_family_it_cannot_reach(host: str, address: str, refused: bool) -> None:
    settings = SimpleNamespace(host=host, media_via_edge=False)
    if not refused:
        families.check(offer(address), settings)
        return
    with pytest.raises(sdp.SdpError) as raised:
        families.check(offer(address), settings)
    assert raised.value.status == 488 and raised.value.warning and "only" in raised.value.warning
    families.check(offer(address), SimpleNamespace(host=host, media_via_edge=True))  # the edge relays either
