"""atheris: um.worker.sdp.parse returns a Session or raises SdpError."""

from _runner import run


def load():  # type: ignore[no-untyped-def]
    from um.worker import sdp

    def target(data: bytes) -> None:
        try:
            sdp.parse(data)
        except sdp.SdpError:
            pass

    return target


if __name__ == "__main__":
    run(load)
