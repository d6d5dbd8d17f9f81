"""atheris: the SIP parser answers SipParseError or a message; the stream parser only returns events."""

from _runner import run


def load():  # type: ignore[no-untyped-def]
    from um.sip.parser import SipParseError, StreamParser, parse_datagram

    def target(data: bytes) -> None:
        try:
            parse_datagram(data)
        except SipParseError:
            pass
        StreamParser().feed(data)

    return target


if __name__ == "__main__":
    run(load)
